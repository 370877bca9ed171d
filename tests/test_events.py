"""dataset=events: a user's own impression table (CSV / Parquet) with a column mapping."""

from __future__ import annotations

import csv
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from ctrbench import registry
from ctrbench.datasets.events import EventsDataset
from ctrbench.datasets.rawfiles import DatasetError
from ctrbench.engine.data import ArrayBatches
from ctrbench.results.record import error_line
from ctrbench.schema import DatasetSplits

SPLITS = ("train", "val", "test")
HEADER = ["who", "ad", "ad_cat", "clicked", "ts", "slot", "device"]
MAPPING = dict(user="who", item="ad", category="ad_cat", label="clicked", timestamp="ts")


@dataclass
class Event:
    user: str
    item: str
    cat: str
    click: int
    time: int
    slot: str
    device: str


def events(seed: int = 0, n_users: int = 60, n_items: int = 40, per_user: int = 12) -> list[Event]:
    """Unique (user, item) pairs and unique times, so that a row can be traced back to its event."""
    rng = np.random.default_rng(seed)
    times = rng.permutation(n_users * per_user) * 10 + 1_700_000_000
    out, k = [], 0
    for u in range(n_users):
        for i in rng.choice(n_items, size=per_user, replace=False):
            click = int(rng.random() < 0.4)
            slot, device = f"s{rng.integers(3)}", ["ios", "android", "web"][rng.integers(3)]
            out.append(Event(f"u{u}", f"ad{i}", f"c{i % 5}", click, int(times[k]), slot, device))
            k += 1
    return out


def write_csv(path: Path, rows: list[Event], iso: bool = False, words: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        for e in rows:
            ts = str(np.datetime64(e.time, "s")) if iso else e.time
            click = ("yes" if e.click else "no") if words else e.click
            w.writerow([e.user, e.item, e.cat, click, ts, e.slot, e.device])
    return path


def load(root: Path, cache: Path, **options) -> DatasetSplits:
    opts = {**MAPPING, **options}
    return EventsDataset(EventsDataset.Config(root=str(root), cache_dir=str(cache), **opts)).load()


def trace(data: DatasetSplits, rows: list[Event], split: str) -> list[Event]:
    """The raw event behind each row of a split (ids are sorted raw keys, 1-based)."""
    users = sorted({e.user for e in rows})
    items = sorted({e.item for e in rows})
    by_pair = {(e.user, e.item): e for e in rows}
    s = getattr(data, split)
    return [
        by_pair[(users[u - 1], items[i - 1])]
        for u, i in zip(s.columns["user"], s.columns["item"], strict=True)
    ]


@pytest.fixture(scope="module")
def log() -> list[Event]:
    return events()


@pytest.fixture(scope="module")
def table(log, tmp_path_factory) -> Path:
    return write_csv(tmp_path_factory.mktemp("events") / "log.csv", log)


def test_histories_are_earlier_positive_events_of_the_user(log, table, tmp_path) -> None:
    data = load(table, tmp_path, max_len=4, min_history=0)
    items = sorted({e.item for e in log})
    for split in SPLITS:
        s = getattr(data, split)
        batch = ArrayBatches(s, data.schema, data.sequences)[torch.arange(len(s))]
        for r, e in enumerate(trace(data, log, split)):
            clicked = sorted(
                (x.time, x.item) for x in log if x.user == e.user and x.click and x.time < e.time
            )
            n = int(batch["hist_len"][r])
            assert [items[i - 1] for i in batch["hist_item"][r, :n].tolist()] == [i for _, i in clicked][-4:]
            assert float(batch["label"][r]) == e.click
    assert sum(len(getattr(data, s)) for s in SPLITS) == len(log)


def test_time_split_puts_the_latest_events_in_test(log, table, tmp_path) -> None:
    data = load(table, tmp_path, min_history=0, test_frac=0.2, val_frac=0.1)
    times = {s: [e.time for e in trace(data, log, s)] for s in SPLITS}
    assert max(times["train"]) < min(times["val"]) and max(times["val"]) < min(times["test"])
    assert len(times["test"]) == round(0.2 * len(log)) and len(times["val"]) == round(0.1 * len(log))
    assert data.info["split"] == "time"


def test_user_split_is_disjoint(table, tmp_path) -> None:
    data = load(table, tmp_path, split="user", test_frac=0.25, val_frac=0.2)
    users = {s: set(getattr(data, s).columns["user"].tolist()) for s in SPLITS}
    assert not users["train"] & users["test"] and not users["train"] & users["val"]
    assert not users["val"] & users["test"]
    assert len(users["test"]) == 15 and len(users["val"]) == 9


def test_extra_columns_and_category_become_fields(log, table, tmp_path) -> None:
    data = load(table, tmp_path, extra=["slot", "device"])
    schema = data.schema
    assert schema["slot"].vocab == 4 and schema["device"].vocab == 4 and schema["cat"].vocab == 6
    assert schema["hist_cat"].table == "cat" and schema["neg_hist_item"].negative_of == "hist_item"
    raw = trace(data, log, "train")
    slots = sorted({e.slot for e in log})
    assert [slots[v - 1] for v in data.train.columns["slot"]] == [e.slot for e in raw]
    cats = sorted({e.cat for e in log})
    assert [cats[v - 1] for v in data.train.columns["cat"]] == [e.cat for e in raw]
    assert data.info["extra_columns"] == {"slot": 3, "device": 3}


def test_dropped_rows_and_user_feature(log, table, tmp_path) -> None:
    data = load(table, tmp_path, user_feature=True, split="user")
    kept = sum(len(getattr(data, s)) for s in SPLITS)
    assert kept + data.info["dropped"]["rows_with_fewer_than_1_earlier_positives"] == len(log)
    assert (data.train.columns["uid"] == data.train.columns["user"]).all()
    assert not data.test.columns["uid"].any()
    assert min(getattr(data, s).end.min() for s in SPLITS if len(getattr(data, s))) >= 1


def test_iso_times_and_word_labels_read_like_numbers(log, table, tmp_path) -> None:
    numeric = load(table, tmp_path / "a")
    other = load(write_csv(tmp_path / "iso.csv", log, iso=True, words=True), tmp_path / "b")
    for s in SPLITS:
        for key in ("user", "item", "label"):
            np.testing.assert_array_equal(getattr(numeric, s).columns[key], getattr(other, s).columns[key])


def test_without_category_column(table, tmp_path) -> None:
    data = load(table, tmp_path, category="")
    assert "cat" not in data.schema and "hist_cat" not in data.schema and "neg_hist_cat" not in data.schema
    data.resample(2)
    cols = data.sequences.columns
    assert (cols["neg_hist_item"] != cols["hist_item"]).all()


@pytest.mark.skipif(importlib.util.find_spec("pyarrow") is None, reason="pyarrow not installed")
def test_parquet_gives_the_same_arrays_as_csv(log, table, tmp_path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = {h: [getattr(e, f) for e in log] for h, f in zip(HEADER, Event.__dataclass_fields__, strict=True)}
    cols["ts"] = pa.array(np.array(cols["ts"], dtype="datetime64[s]"))
    pq.write_table(pa.table(cols), tmp_path / "log.parquet")
    a = load(table, tmp_path / "a", extra=["slot"])
    b = load(tmp_path / "log.parquet", tmp_path / "b", extra=["slot"])
    for s in SPLITS:
        for key in ("user", "item", "cat", "slot", "label"):
            np.testing.assert_array_equal(getattr(a, s).columns[key], getattr(b, s).columns[key])
        np.testing.assert_array_equal(getattr(a, s).end, getattr(b, s).end)


def test_root_folder_with_file_option(table, tmp_path) -> None:
    data = load(table.parent, tmp_path, file=table.name)
    assert len(data.train) > 0
    with pytest.raises(DatasetError, match=r"holds no events\.csv \(found: log\.csv\)"):
        load(table.parent, tmp_path)
    with pytest.raises(DatasetError, match="does not exist"):
        load(tmp_path / "nope.csv", tmp_path)


def test_bad_tables_are_reported_with_the_line(log, tmp_path) -> None:
    path = write_csv(tmp_path / "log.csv", log)
    with pytest.raises(
        DatasetError, match=r"has no column 'user', 'item', 'label', 'timestamp' \(columns: who, ad, ad_cat"
    ):
        EventsDataset(EventsDataset.Config(root=str(path), cache_dir=str(tmp_path))).load()
    lines = path.read_text().splitlines()

    def broken(line: str) -> None:
        path.write_text("\n".join([*lines[:5], line, *lines[6:]]) + "\n")

    broken("u1,ad1,c1,1,1700000000")
    with pytest.raises(DatasetError, match=r"log\.csv:6: malformed line \(5 fields, the header has 7\)"):
        load(path, tmp_path)
    broken("u1,ad1,c1,maybe,1700000000,s1,web")
    with pytest.raises(DatasetError, match=r"log\.csv:6: column 'clicked' has 'maybe', not a number"):
        load(path, tmp_path)
    broken("u1,ad1,c1,1,yesterday,s1,web")
    with pytest.raises(DatasetError, match=r"log\.csv:6: column 'ts' has 'yesterday', neither a number nor"):
        load(path, tmp_path)
    broken(",ad1,c1,1,1700000000,s1,web")
    with pytest.raises(DatasetError, match=r"log\.csv:6: column 'who' is empty"):
        load(path, tmp_path)
    path.write_text(",".join(HEADER) + "\n")
    with pytest.raises(DatasetError, match="has a header but no rows"):
        load(path, tmp_path)


def test_no_clicks_is_a_clear_error(log, tmp_path) -> None:
    rows = [Event(e.user, e.item, e.cat, 0, e.time, e.slot, e.device) for e in log]
    with pytest.raises(DatasetError, match=r"log\.csv has no positive events \(column 'clicked'\)"):
        load(write_csv(tmp_path / "log.csv", rows), tmp_path, min_history=0)


def test_bad_options(tmp_path) -> None:
    with pytest.raises(DatasetError, match="dataset.root is required"):
        EventsDataset(EventsDataset.Config())
    with pytest.raises(DatasetError, match=r"dataset.extra=\['item'\] is invalid"):
        EventsDataset(EventsDataset.Config(root="x", extra=["item"]))
    with pytest.raises(DatasetError, match="dataset.split='random' is invalid"):
        EventsDataset(EventsDataset.Config(root="x", split="random"))


def test_list_option_composes_from_the_command_line(compose_cfg) -> None:
    if "events" not in registry.names("dataset"):
        pytest.skip("the events entry point is not installed")
    cfg = compose_cfg(["dataset=events", "dataset.extra=[slot,device]", "dataset.root=/x.csv"])
    config = registry.make_config("dataset", "events", dict(cfg.dataset))
    assert list(config.extra) == ["slot", "device"] and config.root == "/x.csv"


# ---- values the protocol cannot use are refused, and nothing is cached --------------------------------
def refused(path: Path, cache: Path, pattern: str) -> str:
    """Loading ``path`` fails with one line matching ``pattern``; no cache or temporary folder is left."""
    with pytest.raises(DatasetError) as err:
        load(path, cache)
    line = error_line(err.value)
    assert "\n" not in str(err.value) and line.startswith("DatasetError: ")
    assert re.search(pattern, line), line
    assert not (cache / "events").exists()
    return line


def with_row(log: list[Event], path: Path, row: int, **values: str) -> Path:
    """The log as CSV with the fields of data row ``row`` (file line row + 2) replaced as text."""
    write_csv(path, log)
    lines = path.read_text().splitlines()
    fields = dict(zip(HEADER, lines[row + 1].split(","), strict=True)) | values
    lines[row + 1] = ",".join(fields[h] for h in HEADER)
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("value", ["NaN", "nan", "2", "-1", "0.5", "maybe"])
def test_a_label_other_than_0_1_is_refused(log, tmp_path, value) -> None:
    path = with_row(log, tmp_path / "log.csv", 30, clicked=value)
    refused(
        path,
        tmp_path / "c",
        rf"log\.csv:32: column 'clicked' has '{value}', not a .*allowed: 0 or 1, true/false",
    )


def test_label_words_are_still_read(log, tmp_path) -> None:
    path = with_row(log, tmp_path / "log.csv", 30, clicked="TRUE")
    with_row(log, tmp_path / "plain.csv", 30, clicked="1")
    a, b = load(path, tmp_path / "a"), load(tmp_path / "plain.csv", tmp_path / "b")
    np.testing.assert_array_equal(a.train.columns["label"], b.train.columns["label"])


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN"])
def test_a_nan_or_infinite_timestamp_is_refused(log, tmp_path, value) -> None:
    path = with_row(log, tmp_path / "log.csv", 17, ts=value)
    refused(
        path,
        tmp_path / "c",
        rf"log\.csv:19: column 'ts' has '{value}', not a finite time \(allowed: all epoch",
    )


def test_a_date_time_among_epoch_numbers_is_refused(log, tmp_path) -> None:
    path = with_row(log, tmp_path / "log.csv", 40, ts="2023-11-14T22:13:20")
    line = refused(path, tmp_path / "c", r"log\.csv:42: column 'ts' has '2023-11-14T22:13:20', a date-time")
    assert f"first value '{log[0].time}' ({path}:2) is a number" in line
    assert "one kind (allowed: all epoch numbers, or all ISO date-times" in line


def test_an_epoch_number_among_date_times_is_refused(log, tmp_path) -> None:
    path = write_csv(tmp_path / "log.csv", log, iso=True)
    lines = path.read_text().splitlines()
    lines[9] = lines[9].replace(str(np.datetime64(log[8].time, "s")), "1700000000")
    path.write_text("\n".join(lines) + "\n")
    refused(
        path, tmp_path / "c", r"log\.csv:10: column 'ts' has '1700000000', a number, but its first value '20"
    )
    lines[9] = lines[9].replace("1700000000", "NaT")
    path.write_text("\n".join(lines) + "\n")
    refused(
        path, tmp_path / "c", r"log\.csv:10: column 'ts' has 'NaT', neither a number nor an ISO date-time"
    )


@pytest.mark.skipif(importlib.util.find_spec("pyarrow") is None, reason="pyarrow not installed")
def test_parquet_nan_label_and_time_are_refused(log, tmp_path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = {h: [getattr(e, f) for e in log] for h, f in zip(HEADER, Event.__dataclass_fields__, strict=True)}
    bad_label = dict(
        cols, clicked=[float("nan") if k == 5 else float(v) for k, v in enumerate(cols["clicked"])]
    )
    pq.write_table(pa.table(bad_label), tmp_path / "label.parquet")
    refused(tmp_path / "label.parquet", tmp_path / "c", r"label\.parquet, row 5: column 'clicked' has 'nan'")
    bad_time = dict(cols, ts=[float("inf") if k == 7 else float(v) for k, v in enumerate(cols["ts"])])
    pq.write_table(pa.table(bad_time), tmp_path / "time.parquet")
    refused(
        tmp_path / "time.parquet",
        tmp_path / "c",
        r"time\.parquet, row 7: column 'ts' has 'inf', not a finite",
    )


def test_a_job_on_a_refused_table_records_one_error_line(log, tmp_path, compose_cfg) -> None:
    from ctrbench.engine import job

    path = with_row(log, tmp_path / "log.csv", 30, ts="2023-11-14T22:13:20")
    overrides = [f"dataset.{k}={v}" for k, v in MAPPING.items()]
    cfg = compose_cfg(
        ["dataset=events", f"dataset.root={path}", f"dataset.cache_dir={tmp_path / 'c'}", *overrides]
        + ["model=base", "trainer.max_epochs=1", "checkpoint=false", "logger=none"]
    )
    record = job.run(cfg, tmp_path / "job")
    assert record["status"] == "failed"
    assert record["error"].startswith(
        f"DatasetError: {path}:32: column 'ts' has '2023-11-14T22:13:20', a date-time"
    )
    assert "\n" not in record["error"] and not (tmp_path / "c" / "events").exists()
