"""dataset=events on pyarrow: Parquet shards with hive partitions, filters, named time boundaries,
vocabularies, shard fingerprints, and the vectorized helpers behind the build."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_events import HEADER, SPLITS, Event, events, load, trace, write_csv

from ctrbench import registry
from ctrbench.datasets.cache import parquet_footer_digests
from ctrbench.datasets.events import EventsDataset, latest
from ctrbench.datasets.rawfiles import DatasetError
from ctrbench.datasets.sequences import user_time_order
from ctrbench.results.record import error_line

DAYS = ("2024-01-05", "2024-01-06", "2024-01-07")


def day_of(e: Event) -> str:
    return DAYS[int(e.item[2:]) % 3]


def columns(rows: list[Event], ints: bool = False) -> dict[str, list]:
    cols = {h: [getattr(e, f) for e in rows] for h, f in zip(HEADER, Event.__dataclass_fields__, strict=True)}
    if ints:  # the same ids as integers: ad7 → 7
        cols["ad"] = [int(v[2:]) for v in cols["ad"]]
    return cols


def write_shards(root: Path, rows: list[Event], ints: bool = False) -> Path:
    """The log as hive-partitioned Parquet shards ``date=…/part-<k>.parquet``, two shards per day."""
    for day in DAYS:
        part = [e for e in rows if day_of(e) == day]
        folder = root / f"date={day}"
        folder.mkdir(parents=True, exist_ok=True)
        half = len(part) // 2
        for k, chunk in enumerate((part[:half], part[half:])):
            pq.write_table(pa.table(columns(chunk, ints)), folder / f"part-{k}.parquet")
    return root


@pytest.fixture(scope="module")
def log() -> list[Event]:
    return events()


def refused(root: Path, cache: Path, pattern: str, **options) -> str:
    with pytest.raises(DatasetError) as err:
        load(root, cache, **options)
    line = error_line(err.value)
    assert "\n" not in str(err.value) and re.search(pattern, line), line
    assert not (cache / "events").exists()
    return line


# ---- Parquet shards and hive partitions ----------------------------------------------------------------
def test_shards_give_the_same_rows_as_the_csv(log, tmp_path) -> None:
    ordered = [e for day in DAYS for e in log if day_of(e) == day]  # the shards' row order
    a = load(write_csv(tmp_path / "log.csv", ordered), tmp_path / "a", extra=["slot"])
    b = load(write_shards(tmp_path / "shards", log), tmp_path / "b", extra=["slot"])
    for s in SPLITS:
        for key in ("user", "item", "cat", "slot", "label"):
            np.testing.assert_array_equal(getattr(a, s).columns[key], getattr(b, s).columns[key])
        np.testing.assert_array_equal(getattr(a, s).end, getattr(b, s).end)
    assert sum(len(getattr(b, s)) for s in SPLITS) + sum(b.info["dropped"].values()) == len(log)


def test_a_filter_keeps_its_rows_and_prunes_partitions(log, tmp_path) -> None:
    root = write_shards(tmp_path / "shards", log)
    # a partition the filter excludes is never opened: damage it
    (root / "date=2024-01-07" / "part-1.parquet").write_bytes(b"not parquet at all")
    kept_filter = [["date", "le", "2024-01-06"], ["slot", "!=", "s2"]]
    data = load(root, tmp_path / "c", filter=kept_filter, min_history=0)
    kept = [e for e in log if day_of(e) <= "2024-01-06" and e.slot != "s2"]
    assert sum(len(getattr(data, s)) for s in SPLITS) == len(kept)
    assert {e.item for s in SPLITS for e in trace(data, kept, s)} <= {e.item for e in kept}
    assert data.info["filter"] == kept_filter
    refused(
        root,
        tmp_path / "d",
        r"date=2024-01-07/part-1\.parquet is not a readable Parquet file \(",
        min_history=0,
    )


def test_filter_ops_and_in_lists(log, tmp_path) -> None:
    root = write_shards(tmp_path / "shards", log)
    data = load(root, tmp_path / "c", filter=[["device", "in", ["ios", "web"]], ["ts", "<", 1_700_004_000]])
    n = sum(len(getattr(data, s)) for s in SPLITS) + sum(data.info["dropped"].values())
    assert n == sum(e.device in ("ios", "web") and e.time < 1_700_004_000 for e in log)


@pytest.mark.parametrize(
    ("filter", "pattern"),
    [
        (
            [["day", "ge", "2024-01-06"]],
            r"dataset\.filter entry \['day', 'ge', '2024-01-06'\]: no column 'day' \(col",
        ),
        ([["date", "~", "x"]], r"unknown op '~'; must be a list of \[column, op, value\] triples"),
        ([["ts", ">", "soon"]], r"'soon' is not a value of column 'ts' \(int64"),
        ([["date", "ge"]], r"dataset\.filter entry \['date', 'ge'\] is invalid: must be a list of"),
        ([["date", "ge", "2031-01-01"]], r"dataset\.filter=.* keeps none of the rows of .*shards"),
    ],
)
def test_bad_filters_are_one_line(log, tmp_path, filter, pattern) -> None:
    refused(write_shards(tmp_path / "shards", log), tmp_path / "c", pattern, filter=filter)


def test_filter_composes_from_the_command_line(compose_cfg) -> None:
    if "events" not in registry.names("dataset"):
        pytest.skip("the events entry point is not installed")
    cfg = compose_cfg(
        ["dataset=events", "dataset.root=/x", "dataset.filter=[[date,ge,2024-01-07],[slot,in,[s1,s2]]]"]
        + ["dataset.test_from=2024-01-07", "dataset.val_from=1704585600"]
    )
    data = EventsDataset(registry.make_config("dataset", "events", dict(cfg.dataset)))
    assert data.config.filter == [["date", "ge", "2024-01-07"], ["slot", "in", ["s1", "s2"]]]
    assert (data.config.test_from, data.config.val_from) == ("2024-01-07", "1704585600")


def test_a_bad_value_in_a_shard_names_the_shard_and_its_row(log, tmp_path) -> None:
    root = write_shards(tmp_path / "shards", log)
    shard = root / "date=2024-01-06" / "part-1.parquet"
    table = pq.read_table(shard)
    labels = table.column("clicked").to_pylist()
    labels[3] = 7
    pq.write_table(table.set_column(3, "clicked", pa.array(labels)), shard)
    refused(
        root, tmp_path / "c", rf"{re.escape(str(shard))}, row 3: column 'clicked' has '7', not a click label"
    )
    # with a filter that drops rows before it, the row is still the shard's own row number
    slot = table.column("slot").to_pylist()
    keep = "s2" if slot[3] != "s2" else "s1"
    line = refused(root, tmp_path / "c", r"column 'clicked' has '7'", filter=[["slot", "!=", keep]])
    assert f"{shard}, row 3:" in line
    ids = table.column("who").to_pylist()
    ids[5] = None
    pq.write_table(table.set_column(0, "who", pa.array(ids)), shard)
    refused(
        root, tmp_path / "c", rf"{re.escape(str(shard))}, row 5: column 'who' is empty \(1 empty values\)"
    )


def test_a_time_kind_changing_between_shards_is_refused(log, tmp_path) -> None:
    root = write_shards(tmp_path / "shards", log)
    first = root / "date=2024-01-05" / "part-0.parquet"
    shard = root / "date=2024-01-07" / "part-0.parquet"
    times = pa.array([str(np.datetime64(t, "s")) for t in pq.read_table(shard).column("ts").to_pylist()])
    for path in (first, shard):
        t = pq.read_table(path)
        ts = times if path == shard else pa.array([str(v) for v in t.column("ts").to_pylist()])
        pq.write_table(t.set_column(4, "ts", ts), path)
    line = refused(root, tmp_path / "c", rf"{re.escape(str(shard))}, row 0: column 'ts' has '2023-11-14T")
    value = pq.read_table(first).column("ts")[0]
    assert f"a date-time, but its first value '{value}' ({first}, row 0) is a number" in line


# ---- CSV line numbers --------------------------------------------------------------------------------
def test_csv_errors_count_lines_across_blank_lines(log, tmp_path) -> None:
    path = write_csv(tmp_path / "log.csv", log)
    lines = path.read_text().splitlines()
    lines[10] = lines[10].replace(f",{log[9].time},", ",nan,")
    path.write_text("\n".join([*lines[:4], "", "", *lines[4:]]) + "\n")  # two blank lines before it
    refused(path, tmp_path / "c", r"log\.csv:13: column 'ts' has 'nan', not a finite time .*1 such rows\)")


# ---- split by named boundaries ---------------------------------------------------------------------------
def test_time_boundaries_split_the_rows(log, tmp_path) -> None:
    table = write_csv(tmp_path / "log.csv", log)
    t_val, t_test = 1_700_004_000, 1_700_006_000
    data = load(table, tmp_path / "c", min_history=0, val_from=str(t_val), test_from=str(t_test))
    times = {s: [e.time for e in trace(data, log, s)] for s in SPLITS}
    assert sorted(times["test"]) == sorted(e.time for e in log if e.time >= t_test)
    assert sorted(times["val"]) == sorted(e.time for e in log if t_val <= e.time < t_test)
    assert sorted(times["train"]) == sorted(e.time for e in log if e.time < t_val)
    assert (data.info["val_from"], data.info["test_from"]) == (str(t_val), str(t_test))


def test_date_boundaries_on_date_times_and_test_from_alone(log, tmp_path) -> None:
    iso = write_csv(tmp_path / "iso.csv", log, iso=True)
    cut = "2023-11-14T23:50"  # 1_700_005_800
    data = load(iso, tmp_path / "c", min_history=0, test_from=cut, val_frac=0.25)
    times = {s: sorted(e.time for e in trace(data, log, s)) for s in SPLITS}
    assert times["test"] == sorted(e.time for e in log if e.time >= 1_700_005_800)
    before = sorted(e.time for e in log if e.time < 1_700_005_800)
    n_val = round(0.25 * len(before))
    assert times["val"] == before[len(before) - n_val :] and times["train"] == before[: len(before) - n_val]


@pytest.mark.parametrize(
    ("options", "pattern"),
    [
        (
            dict(val_from="1700006000", test_from="1700004000"),
            r"val_from='1700006000' is after dataset\.test_from",
        ),
        (dict(val_from="1700004000"), r"dataset\.val_from='1700004000' needs dataset\.test_from"),
        (
            dict(test_from="yesterday"),
            r"dataset\.test_from='yesterday' is invalid: must be a date \(2024-01-07\)",
        ),
        (
            dict(test_from="1800000000"),
            r"leave the test split of log\.csv empty \(its 720 events span 1700000000",
        ),
        (dict(test_from="1700006000", val_from="1600000000"), r"leave the training split of log\.csv empty"),
        (
            dict(test_from="1700006000", val_from="1700006000"),
            r"leave the validation split of log\.csv empty",
        ),
        (
            dict(test_from="2024-01-07"),
            r"'2024-01-07' is a date-time but column 'ts' holds epoch numbers: .*1704585600 \(seconds\)",
        ),
        (dict(test_from="1700004000", split="user"), r"val_from/test_from name split=time boundaries"),
    ],
)
def test_bad_boundaries_are_one_line(log, tmp_path, options, pattern) -> None:
    refused(write_csv(tmp_path / "log.csv", log), tmp_path / "c", pattern, min_history=0, **options)


# ---- vocabularies ------------------------------------------------------------------------------------------
def test_vocabularies_name_the_raw_id_of_every_row(log, tmp_path) -> None:
    table = write_csv(tmp_path / "log.csv", log)
    data = load(table, tmp_path / "c", extra=["slot"], user_feature=True)
    vocab = data.vocabularies
    assert set(vocab) == set(data.schema.tables()) == {"uid", "item", "cat", "slot"}
    for name, size in data.schema.tables().items():
        assert len(vocab[name]) == size and vocab[name][0] == ""
    raw = trace(data, log, "train")
    assert [vocab["item"][i] for i in data.train.columns["item"]] == [e.item for e in raw]
    assert [vocab["cat"][i] for i in data.train.columns["cat"]] == [e.cat for e in raw]
    assert [vocab["uid"][i] for i in data.train.columns["uid"]] == [e.user for e in raw]
    again = load(table, tmp_path / "c", extra=["slot"], user_feature=True)  # from the cache
    assert "build_seconds" in again.info and again.vocabularies is not None
    np.testing.assert_array_equal(again.vocabularies["item"], vocab["item"])


def test_the_same_raw_id_gives_the_same_string_in_csv_and_parquet(log, tmp_path) -> None:
    numbers = [Event(e.user, e.item[2:], e.cat, e.click, e.time, e.slot, e.device) for e in log]
    a = load(write_csv(tmp_path / "log.csv", numbers), tmp_path / "a")  # "7" read as text
    b = load(write_shards(tmp_path / "shards", log, ints=True), tmp_path / "b")  # 7 as int64
    assert set(a.vocabularies["item"]) == set(b.vocabularies["item"]) == {"", *(e.item for e in numbers)}


# ---- shard fingerprints ------------------------------------------------------------------------------------
def test_a_changed_or_added_shard_changes_the_key(log, tmp_path) -> None:
    root = write_shards(tmp_path / "shards", log)
    key = load(root, tmp_path / "c").info["fingerprint"]
    assert load(root, tmp_path / "c").info["fingerprint"] == key  # a hit
    digests = parquet_footer_digests(root, sorted(root.rglob("*.parquet")))
    assert sorted(digests) == [f"date={d}/part-{k}.parquet" for d in DAYS for k in (0, 1)]
    shard = root / "date=2024-01-06" / "part-0.parquet"
    table = pq.read_table(shard)
    pq.write_table(table.slice(1), shard)
    changed = load(root, tmp_path / "c").info["fingerprint"]
    pq.write_table(table.slice(0, 1), root / "date=2024-01-06" / "part-2.parquet")
    added = load(root, tmp_path / "c").info["fingerprint"]
    assert len({key, changed, added}) == 3
    stat = shard.stat()
    os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert load(root, tmp_path / "c").info["fingerprint"] != added


def test_hidden_and_underscore_files_are_not_shards(log, tmp_path) -> None:
    root = write_shards(tmp_path / "shards", log)
    (root / "_SUCCESS").write_text("")
    (root / ".part-9.parquet").write_text("partial upload")
    assert sum(len(getattr(load(root, tmp_path / "c"), s)) for s in SPLITS) > 0


# ---- vectorized helpers ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("n_users", "span", "scale"), [(5, 3, 1), (300, 50, 1), (7, 4, 2**40), (2**20, 6, 10**9)]
)
def test_user_time_order_is_a_stable_lexsort(n_users, span, scale) -> None:
    rng = np.random.default_rng(n_users)
    user = rng.integers(0, n_users, 20_000)
    time = rng.integers(0, span, 20_000) * scale + 1_700_000_000
    np.testing.assert_array_equal(user_time_order(user, time), np.lexsort((time, user)))
    floats = time.astype(np.float64) / 7
    np.testing.assert_array_equal(user_time_order(user, floats), np.lexsort((floats, user)))


def test_latest_rows_match_a_stable_rank() -> None:
    rng = np.random.default_rng(0)
    time = rng.integers(0, 9, 1000).astype(np.float64)
    rank = np.empty(1000, dtype=np.int64)
    rank[np.argsort(time, kind="stable")] = np.arange(1000)
    for k in (0, 1, 99, 500, 999, 1000):
        np.testing.assert_array_equal(latest(time, k), rank >= 1000 - k)


def test_date_times_with_zone_offsets_are_read_as_utc(tmp_path) -> None:
    rows = "".join(
        f"u{i % 3},i{i % 5},{i % 2},2024-01-0{1 + i % 5}T10:00:0{i % 10}+01:00\n" for i in range(40)
    )
    path = tmp_path / "log.csv"
    path.write_text("user,item,label,timestamp\n" + rows)
    config = EventsDataset.Config(root=str(path), cache_dir=str(tmp_path / "c"), min_history=0)
    config.test_from = "2024-01-05T09:00"  # = 10:00+01:00, the last day's first second
    data = EventsDataset(config).load()
    assert (len(data.train) + len(data.val), len(data.test)) == (32, 8)
