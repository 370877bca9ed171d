"""One copy of a dataset's arrays per machine: cache files mapped by every process, never copied."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ctrbench.datasets.cache import ArrayCache, CachedData
from ctrbench.datasets.events import EventsDataset
from ctrbench.datasets.sequences import AuxNegatives
from ctrbench.datasets.synthetic import SyntheticConfig, SyntheticDataset
from ctrbench.engine.batches import ArrayBatches, histories
from ctrbench.schema import DatasetSplits, Field, Schema, Sequences, Split

SPLITS = ("train", "val", "test")
linux_only = pytest.mark.skipif(not Path("/proc/self/smaps").is_file(), reason="needs /proc/<pid>/smaps")


def mapping_kb(path: str | Path, pid: int | str = "self") -> dict[str, int]:
    """Rss, Pss and Anonymous (copy-on-write pages made private), in kB, summed over the mappings
    of one file in ``/proc/<pid>/smaps``."""
    target = os.path.realpath(path)
    out = {"Rss": 0, "Pss": 0, "Anonymous": 0}
    inside = False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        if "-" in parts[0] and not parts[0].endswith(":"):  # a mapping's header line
            inside = len(parts) == 6 and parts[5] == target
        elif inside and parts[0].rstrip(":") in out:
            out[parts[0].rstrip(":")] += int(parts[1])
    return out


def all_arrays(data: DatasetSplits, extras: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    out = {f"extras.{k}": v for k, v in (extras or {}).items()}
    for name in SPLITS:
        split: Split = getattr(data, name)
        out.update({f"{name}.{k}": v for k, v in split.columns.items()})
        out.update({f"{name}.{k}": v for k, v in (("seq", split.seq), ("end", split.end)) if v is not None})
    if data.sequences is not None:
        out["sequences.offsets"] = data.sequences.offsets
        out.update({f"sequences.{k}": v for k, v in data.sequences.columns.items()})
    return out


def toy(n_rows: int = 6, n_users: int = 3, seq_len: int = 5) -> CachedData:
    """Rows of ``n_users`` users, each user with a behaviour sequence of ``seq_len`` items."""
    rng = np.random.default_rng(0)
    schema = Schema(
        fields=(
            Field("item", "categorical", vocab=50),
            Field("hist_item", "sequence", 50, "item", "hist_len"),
        ),
        max_len=3,
    )
    seq = rng.integers(0, n_users, size=n_rows)
    columns = {
        "item": rng.integers(1, 50, size=n_rows),
        "user": seq + 1,
        "label": (rng.random(n_rows) < 0.5).astype(np.float32),
    }
    split = Split(columns, seq=seq, end=rng.integers(0, seq_len, size=n_rows))
    offsets = np.arange(n_users + 1, dtype=np.int64) * seq_len
    sequences = Sequences(offsets, {"hist_item": rng.integers(1, 50, size=n_users * seq_len)})
    return CachedData(DatasetSplits(schema, split, split, split, sequences=sequences, info={"rows": n_rows}))


def assert_mapped(arrays: dict[str, np.ndarray], folder: Path) -> None:
    for name, array in arrays.items():
        assert isinstance(array, np.memmap), name
        assert Path(array.filename).parent == folder.resolve(), name


def test_a_build_and_a_hit_both_return_maps_of_the_cache_files(tmp_path, raw_file) -> None:
    cache = ArrayCache("toy", 1, str(tmp_path / "c"))
    built = cache.load_or_build([raw_file], {}, toy)
    folder = Path(built.data.info["cache"])
    assert_mapped(all_arrays(built.data, built.extras), folder)  # the builder keeps no heap copy
    hit = cache.load_or_build([raw_file], {}, lambda: pytest.fail("rebuilt"))
    assert_mapped(all_arrays(hit.data, hit.extras), folder)
    for name, array in all_arrays(toy().data).items():
        np.testing.assert_array_equal(all_arrays(built.data)[name], array)
        np.testing.assert_array_equal(all_arrays(hit.data)[name], array)
    assert built.data.info == hit.data.info and built.data.info["rows"] == 6


def owned_tensors(obj: object) -> dict[str, torch.Tensor]:
    """Every tensor an object holds in its attributes (directly or in a dict)."""
    out = {}
    for key, value in vars(obj).items():
        if isinstance(value, torch.Tensor):
            out[key] = value
        elif isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items() if isinstance(v, torch.Tensor)})
    return out


def test_array_batches_wrap_the_cached_arrays_without_copying(tmp_path, raw_file) -> None:
    data = ArrayCache("toy", 1, str(tmp_path / "c")).load_or_build([raw_file], {}, lambda: toy(200)).data
    arrays = list(all_arrays(data).values())
    spans = [(a.ctypes.data, a.ctypes.data + a.nbytes) for a in arrays]
    for name in SPLITS:
        batches = ArrayBatches(getattr(data, name), data.schema, data.sequences)
        held = owned_tensors(batches)
        assert {"columns.item", "columns.label", "seq_columns.hist_item"} <= set(held)
        for key, tensor in held.items():
            # inside one of the cache's maps: no per-row array of the split's own
            assert any(lo <= tensor.data_ptr() < hi for lo, hi in spans), key

    # and the batches are what the contract says: the last max_len behaviours before `end`, padded
    split, seqs, max_len = data.train, data.sequences, data.schema.max_len
    idx = torch.arange(len(split))
    batch = ArrayBatches(split, data.schema, seqs)[idx]
    for r in range(len(split)):
        start = int(seqs.offsets[split.seq[r]])
        end = start + int(split.end[r])
        want = seqs.columns["hist_item"][max(start, end - max_len) : end]
        assert int(batch["hist_len"][r]) == len(want)
        assert batch["hist_item"][r, : len(want)].tolist() == want.tolist()
        assert not batch["hist_item"][r, len(want) :].any()
    assert batch["item"].tolist() == split.columns["item"].tolist()


@pytest.mark.parametrize("n", [0, 3, 7, 40])
def test_histories_are_copied_as_whole_slices_up_to_the_end_of_the_flat_array(n: int) -> None:
    flat = torch.arange(1, n + 1) * 10
    for width in (1, 5, 8):
        first = torch.tensor([0, n // 2, max(n - width, 0), max(n - 2, 0), n])
        want = torch.tensor(
            [[int(flat[f + j]) if f + j < n else 0 for j in range(width)] for f in first.tolist()]
        )
        assert torch.equal(histories(flat, first, width), want), (n, width)
    strided = torch.arange(1, 2 * n + 1)[::2]  # a non-contiguous column
    assert torch.equal(histories(strided, torch.tensor([0]), 2)[0, : min(n, 2)], strided[: min(n, 2)])


@linux_only
def test_two_processes_map_the_same_physical_pages(tmp_path, raw_file) -> None:
    n = 1 << 20  # 8 MiB per int64 column
    cache = ArrayCache("toy", 1, str(tmp_path / "c"))
    data = cache.load_or_build([raw_file], {}, lambda: toy(n, n_users=1000, seq_len=100)).data
    item = data.train.columns["item"]
    assert int(item.sum()) > 0  # the parent's map of the column is resident
    child = textwrap.dedent(
        f"""
        import json, sys, torch
        from pathlib import Path
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_shared_arrays import mapping_kb
        from ctrbench.datasets.cache import ArrayCache
        from ctrbench.engine.batches import ArrayBatches, histories
        cache = ArrayCache("toy", 1, {str(tmp_path / "c")!r})
        data = cache.load_or_build([Path({str(raw_file)!r})], {{}}, lambda: sys.exit("not a cache hit")).data
        batches = ArrayBatches(data.train, data.schema, data.sequences)
        for idx in torch.randperm(len(batches)).split(1 << 16):
            batches[idx]
        print(json.dumps(mapping_kb(data.train.columns["item"].filename)))
        """
    )
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    kb = json.loads(done.stdout.strip().splitlines()[-1])
    assert kb["Rss"] >= 0.95 * item.nbytes / 1024 and kb["Anonymous"] == 0
    assert kb["Pss"] <= 0.6 * kb["Rss"]  # each page counted half: the parent maps the same page


BUILDER = """
import os, sys, time
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_shared_arrays import toy
from ctrbench.datasets.cache import ArrayCache

def build():
    with open({log!r}, "a") as f:
        f.write(f"{{os.getpid()}}\\n")
    time.sleep(1.0)
    return toy()

Path({ready!r} + str(os.getpid())).touch()
while not Path({go!r}).exists():
    time.sleep(0.01)
cached = ArrayCache("toy", 1, {cache!r}).load_or_build([Path({raw!r})], {{}}, build)
print("mapped" if all(hasattr(a, "filename") for a in cached.data.train.columns.values()) else "heap")
print(cached.data.info["cache"])
"""


def test_concurrent_first_loads_build_once_and_map_the_same_folder(tmp_path, raw_file) -> None:
    log, ready, go = tmp_path / "builds.log", str(tmp_path / "ready-"), tmp_path / "go"
    script = BUILDER.format(
        tests=str(Path(__file__).parent),
        log=str(log),
        ready=ready,
        go=str(go),
        cache=str(tmp_path / "c"),
        raw=str(raw_file),
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    try:
        deadline = time.monotonic() + 120
        while len(list(tmp_path.glob("ready-*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        go.touch()  # both start loading at the same moment
        outputs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outputs]
    assert len(log.read_text().split()) == 1  # one build; the other process waited and mapped it
    assert any("waiting for another process building" in err for _, err in outputs)
    results = [out.split() for out, _ in outputs]
    assert results[0] == results[1] and results[0][0] == "mapped"
    parent = tmp_path / "c" / "toy"
    assert [p.name for p in parent.iterdir()] == [Path(results[0][1]).name]  # no temporary folder left


def write_events(path: Path, n_users: int = 40, per_user: int = 30) -> Path:
    rng = np.random.default_rng(1)
    lines = ["user,item,cat,label,time"]
    t = 0
    for u in range(n_users):
        for i in rng.choice(60, size=per_user, replace=False):
            t += 1
            lines.append(f"u{u},i{i},c{i % 7},{int(rng.random() < 0.5)},{t}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


EVENTS = dict(user="user", item="item", category="cat", label="label", timestamp="time")


def load_events(csv: Path, cache: Path) -> DatasetSplits:
    return EventsDataset(EventsDataset.Config(root=str(csv), cache_dir=str(cache), **EVENTS)).load()


@linux_only
def test_resampling_makes_only_its_own_pages_private(tmp_path) -> None:
    csv = write_events(tmp_path / "raw" / "events.csv")
    load_events(csv, tmp_path / "c")  # build: stores epoch 0's negatives
    data = load_events(csv, tmp_path / "c")
    cols = data.sequences.columns
    stored = np.array(cols["neg_hist_item"])
    data.resample(0)  # the stored draw: nothing written, every page still shared
    np.testing.assert_array_equal(cols["neg_hist_item"], stored)
    assert all(mapping_kb(col.filename)["Anonymous"] == 0 for col in cols.values())
    data.resample(1)
    assert not np.array_equal(cols["neg_hist_item"], stored)
    assert mapping_kb(cols["neg_hist_item"].filename)["Anonymous"] > 0  # re-drawn: private to us
    assert mapping_kb(cols["neg_hist_cat"].filename)["Anonymous"] > 0
    assert mapping_kb(cols["hist_item"].filename)["Anonymous"] == 0  # the rest stays shared
    assert mapping_kb(data.train.columns["item"].filename)["Anonymous"] == 0
    again = load_events(csv, tmp_path / "c")
    np.testing.assert_array_equal(again.sequences.columns["neg_hist_item"], stored)  # the file is unchanged


SMALL = SyntheticConfig(n_users=60, n_items=200, n_cats=10, max_seq_len=20, max_len=8)


def test_synthetic_data_is_cached_by_its_options_and_identical_to_a_fresh_draw(tmp_path, monkeypatch) -> None:
    config = dataclasses.replace(SMALL, cache_dir=str(tmp_path / "c"))
    drawn = SyntheticDataset(config).generate()
    first = SyntheticDataset(config)
    data = first.load()
    folder = Path(data.info["cache"])
    assert folder.parent == tmp_path / "c" / "synthetic"
    assert_mapped(all_arrays(data), folder)
    fresh = all_arrays(drawn.data)
    for name, array in all_arrays(data).items():
        assert array.dtype == fresh[name].dtype and np.array_equal(array, fresh[name]), name
    np.testing.assert_array_equal(first.item_cat, drawn.extras["item_cat"])
    assert data.info["oracle_auc"] == drawn.data.info["oracle_auc"]

    monkeypatch.setattr(SyntheticDataset, "generate", lambda self: pytest.fail("generated again"))
    hit = SyntheticDataset(config)
    assert hit.load().info["cache"] == str(folder) and hit.item_cat is not None
    assert data.info["fingerprint"] == folder.name  # the cache key is the data's fingerprint
    monkeypatch.undo()
    other = SyntheticDataset(dataclasses.replace(config, seed=1)).load()
    assert other.info["cache"] != str(folder)


def test_synthetic_data_without_a_writable_cache_is_generated_in_memory(tmp_path, capfd) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    data = SyntheticDataset(dataclasses.replace(SMALL, cache_dir=str(blocked))).load()
    assert len(data.train) > 0 and not isinstance(data.train.columns["item"], np.memmap)
    err = capfd.readouterr().err
    assert "not usable" in err and "not shared with other processes" in err


def train_on(cfg, data: DatasetSplits, out: Path, monkeypatch) -> dict:
    from ctrbench.engine import job

    data.schema = dataclasses.replace(data.schema, source=cfg.dataset.name)
    monkeypatch.setattr(job, "load_data", lambda _cfg: data)
    return job.train(cfg, out)


def test_a_job_on_mapped_arrays_gives_the_same_numbers_as_on_in_heap_arrays(
    compose_cfg, tmp_path, monkeypatch
) -> None:
    csv = write_events(tmp_path / "raw" / "events.csv")
    overrides = [
        "dataset=events",
        f"dataset.root={csv}",
        f"dataset.cache_dir={tmp_path / 'c'}",
        *[f"dataset.{k}={v}" for k, v in EVENTS.items()],
        "model=dien",  # sequences, and auxiliary negatives re-drawn in place every epoch
        "seed=3",
        "trainer.max_epochs=2",
        "trainer.enable_progress_bar=false",
        "checkpoint=false",
        "logger=none",
        "threads=1",  # the float rounding of the two runs must match whatever load this machine has
    ]
    cfg = compose_cfg(overrides)
    config = EventsDataset.Config(root=str(csv), cache_dir=str(tmp_path / "c"), **EVENTS)
    built = EventsDataset(config).build(csv)  # the arrays as a build holds them, in the heap
    heap = built.data
    heap.resample = AuxNegatives.of(heap, built.extras["popularity"], built.extras["item_cat"], config.seed)
    mapped = EventsDataset(config).load()
    assert isinstance(mapped.train.columns["item"], np.memmap)
    assert not isinstance(heap.train.columns["item"], np.memmap)
    a = train_on(cfg, heap, tmp_path / "heap", monkeypatch)
    b = train_on(cfg, mapped, tmp_path / "mapped", monkeypatch)
    for metric in ("test_auc", "test_gauc", "test_logloss"):
        assert a[metric] == pytest.approx(b[metric], abs=1e-9), metric
    assert len(a["epochs"]) == len(b["epochs"]) == 2
