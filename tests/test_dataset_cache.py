"""The build-once array cache and the downloader shared by the real datasets."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from fixtures_raw import amazon_reviews, write_amazon
from rich.console import Console

from ctrbench.datasets import cache as cache_mod
from ctrbench.datasets.amazon import AmazonDataset
from ctrbench.datasets.cache import STATS, ArrayCache, CachedData, cache_root, print_stats
from ctrbench.datasets.download import DownloadError, RemoteFile, fetch, unzip
from ctrbench.schema import DatasetSplits, Field, Schema, Sequences, Split


def toy(value: int = 1) -> CachedData:
    schema = Schema(
        fields=(Field("item", "categorical", vocab=5), Field("hist_item", "sequence", 5, "item", "n"))
    )
    columns = {"item": np.array([1, 2]), "user": np.array([1, 1]), "label": np.array([1.0, 0.0], np.float32)}
    split = Split(columns, seq=np.array([0, 0]), end=np.array([1, 1]))
    seqs = Sequences(np.array([0, 3]), {"hist_item": np.array([value, 2, 3])})
    data = DatasetSplits(schema, split, split, split, sequences=seqs, info={"rows": {"train": 2}, "users": 1})
    return CachedData(data, {"popularity": np.array([0, 4, 1])})


class Builds:
    """A build function that counts its calls."""

    def __init__(self, value: int = 1, fail: bool = False) -> None:
        self.calls, self.value, self.fail = 0, value, fail

    def __call__(self) -> CachedData:
        self.calls += 1
        if self.fail:
            raise ValueError("build failed half-way")
        return toy(self.value)


def test_hit_loads_without_building_and_keeps_everything(tmp_path, raw_file) -> None:
    cache = ArrayCache("toy", 1, str(tmp_path / "c"))
    build = Builds()
    first = cache.load_or_build([raw_file], {"seed": 1}, build)
    again = cache.load_or_build([raw_file], {"seed": 1}, build)
    assert build.calls == 1
    a, b = first.data, again.data
    assert b.schema == a.schema
    for name in ("train", "val", "test"):
        for key, col in getattr(a, name).columns.items():
            np.testing.assert_array_equal(getattr(b, name).columns[key], col)
            assert getattr(b, name).columns[key].dtype == col.dtype
        np.testing.assert_array_equal(getattr(b, name).end, getattr(a, name).end)
    np.testing.assert_array_equal(b.sequences.columns["hist_item"], [1, 2, 3])
    np.testing.assert_array_equal(again.extras["popularity"], [0, 4, 1])
    folder = Path(b.info["cache"])
    assert folder.parent == tmp_path / "c" / "toy"
    stats = json.loads((folder / STATS).read_text())
    assert stats["rows"] == {"train": 2} and "build_seconds" in stats
    assert {k: v for k, v in b.info.items() if k not in ("cache", "fingerprint")} == stats
    assert b.info["fingerprint"] == a.info["fingerprint"] == folder.name  # the cache key


def test_changed_option_or_file_rebuilds_moved_folder_does_not(tmp_path, raw_file) -> None:
    cache = ArrayCache("toy", 1, str(tmp_path / "c"))
    build = Builds()
    cache.load_or_build([raw_file], {"seed": 1}, build)
    cache.load_or_build([raw_file], {"seed": 2}, build)
    assert build.calls == 2
    moved = tmp_path / "elsewhere" / raw_file.name
    moved.parent.mkdir()
    moved.write_bytes(raw_file.read_bytes())
    cache.load_or_build([moved], {"seed": 1}, build)
    assert build.calls == 2  # same name and content: same key
    raw_file.write_text("1 2 4\n")
    cache.load_or_build([raw_file], {"seed": 1}, build)
    assert build.calls == 3
    assert ArrayCache("toy", 2, str(tmp_path / "c")).key([raw_file], {"seed": 1}) != cache.key(
        [raw_file], {"seed": 1}
    )


def test_failed_build_leaves_no_cache_folder(tmp_path, raw_file) -> None:
    cache = ArrayCache("toy", 1, str(tmp_path / "c"))
    with pytest.raises(ValueError, match="half-way"):
        cache.load_or_build([raw_file], {}, Builds(fail=True))
    folder = tmp_path / "c" / "toy"
    assert not folder.exists() or not any(folder.iterdir())
    build = Builds()
    cache.load_or_build([raw_file], {}, build)
    assert build.calls == 1


def test_interrupted_save_leaves_no_cache_folder(tmp_path, raw_file, monkeypatch) -> None:
    def broken_save(cached, folder):
        np.save(folder / "0000.npy", np.zeros(3))
        raise KeyboardInterrupt

    monkeypatch.setattr(cache_mod, "_save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        ArrayCache("toy", 1, str(tmp_path / "c")).load_or_build([raw_file], {}, Builds())
    assert list((tmp_path / "c" / "toy").iterdir()) == []


def test_temporary_folder_carries_the_pid_and_is_removed_when_the_save_fails(tmp_path, raw_file, monkeypatch):
    cache = ArrayCache("toy", 1, str(tmp_path / "c"))
    key = cache.key([raw_file], {})
    seen = []

    def failing_save(cached, folder):
        seen.append(folder.name)
        np.save(folder / "0000.npy", np.zeros(3))
        raise OSError("disk full")

    monkeypatch.setattr(cache_mod, "_save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        cache.load_or_build([raw_file], {}, Builds())
    assert seen[0].startswith(f".{key}.tmp-{os.getpid()}@{socket.gethostname()}-")
    assert list((tmp_path / "c" / "toy").iterdir()) == []


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def leftover(parent: Path, name: str, age_s: float = 0.0) -> Path:
    """A temporary build folder as a killed build leaves it: some arrays, no manifest."""
    folder = parent / name
    folder.mkdir(parents=True)
    np.save(folder / "0000.npy", np.zeros(3))
    if age_s:
        then = time.time() - age_s
        os.utime(folder, (then, then))
    return folder


def test_next_build_removes_temporary_folders_of_dead_builds(tmp_path, raw_file) -> None:
    parent = tmp_path / "c" / "toy"
    host = socket.gethostname()
    dead = leftover(parent, f".0123abcd.tmp-{dead_pid()}@{host}-k2j3x9q1")
    old_elsewhere = leftover(parent, ".0123abcd.tmp-77@other-node-k2j3x9q2", age_s=7 * 3600)
    old_unnamed = leftover(parent, ".4567ef.tmp-k2j3x9q3", age_s=7 * 3600)  # no PID in the name
    running = leftover(parent, f".89abcd.tmp-{os.getpid()}@{host}-k2j3x9q4")  # a live build here
    fresh_elsewhere = leftover(parent, ".0123abcd.tmp-77@other-node-k2j3x9q5", age_s=60)
    other_dataset = leftover(tmp_path / "c" / "other", f".0123abcd.tmp-{dead_pid()}@{host}-k2j3x9q6")
    cache = ArrayCache("toy", 1, str(tmp_path / "c"))
    cache.load_or_build([raw_file], {}, Builds())
    for gone in (dead, old_elsewhere, old_unnamed):
        assert not gone.exists()
    for kept in (running, fresh_elsewhere, other_dataset):
        assert kept.is_dir()
    entries = {p.name for p in parent.iterdir()}
    assert entries == {running.name, fresh_elsewhere.name, cache.key([raw_file], {})}


def test_a_killed_build_leaves_a_folder_that_the_next_build_removes(tmp_path, raw_file) -> None:
    """The build process dies inside the save (no clean-up runs); the next build removes its folder."""
    script = f"""
import os, numpy as np
from ctrbench.datasets import cache
def killed(cached, folder):
    np.save(folder / "0000.npy", np.zeros(3))
    os._exit(9)
cache._save = killed
from test_dataset_cache import Builds
store = cache.ArrayCache("toy", 1, {str(tmp_path / "c")!r})
store.load_or_build([cache.Path({str(raw_file)!r})], {{}}, Builds())
"""
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])
    )
    assert subprocess.run([sys.executable, "-c", script], env=env, capture_output=True).returncode == 9
    parent = tmp_path / "c" / "toy"
    (left,) = parent.iterdir()
    assert left.name.startswith(".") and ".tmp-" in left.name and not (left / "manifest.json").exists()
    build = Builds()
    cached = ArrayCache("toy", 1, str(tmp_path / "c")).load_or_build([raw_file], {}, build)
    assert build.calls == 1 and [p.name for p in parent.iterdir()] == [Path(cached.data.info["cache"]).name]


def test_damaged_cache_is_rebuilt(tmp_path, raw_file) -> None:
    cache = ArrayCache("toy", 1, str(tmp_path / "c"))
    build = Builds()
    folder = Path(cache.load_or_build([raw_file], {}, build).data.info["cache"])
    (folder / "manifest.json").write_text("{not json")
    cache.load_or_build([raw_file], {}, build)
    assert build.calls == 2


def test_file_digests_are_memoised_by_size_and_mtime(tmp_path, raw_file, monkeypatch) -> None:
    cache = ArrayCache("toy", 1, str(tmp_path / "c"))
    key = cache.key([raw_file], {})
    monkeypatch.setattr(cache_mod, "sha256_file", lambda path: pytest.fail("raw file re-read"))
    assert cache.key([raw_file], {}) == key
    raw_file.write_text("9 9 9\n")  # same size, new mtime: hashed again
    os.utime(raw_file, ns=(1, 1))
    monkeypatch.setattr(cache_mod, "sha256_file", lambda path: hashlib.sha256(path.read_bytes()).hexdigest())
    assert cache.key([raw_file], {}) != key


def test_cache_dir_defaults_to_env_then_home(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CTRBENCH_CACHE", str(tmp_path / "env"))
    assert cache_root() == tmp_path / "env"
    assert cache_root(str(tmp_path / "opt")) == tmp_path / "opt"
    monkeypatch.delenv("CTRBENCH_CACHE")
    assert cache_root() == Path.home() / ".cache" / "ctrbench"


def test_dataset_cache_hit_and_options_that_do_not_matter(tmp_path, monkeypatch) -> None:
    root = write_amazon(tmp_path / "raw", amazon_reviews(seed=2, n_users=40, n_items=50))
    monkeypatch.setenv("CTRBENCH_CACHE", str(tmp_path / "c"))
    first = AmazonDataset(AmazonDataset.Config(root=str(root))).load()
    builds = []
    original = AmazonDataset.build
    monkeypatch.setattr(AmazonDataset, "build", lambda self, *a: builds.append(1) or original(self, *a))
    hit = AmazonDataset(AmazonDataset.Config(root=str(root), url="http://mirror.invalid/")).load()
    assert hit.info["cache"] == first.info["cache"]
    assert hit.info["cache"].startswith(str(tmp_path / "c" / "amazon"))
    np.testing.assert_array_equal(hit.train.columns["item"], first.train.columns["item"])
    # resampling a cache hit changes the arrays in memory only (copy-on-write), not the cache
    before = np.array(hit.sequences.columns["neg_hist_item"])
    hit.resample(3)
    assert not np.array_equal(before, hit.sequences.columns["neg_hist_item"])
    again = AmazonDataset(AmazonDataset.Config(root=str(root))).load()
    np.testing.assert_array_equal(again.sequences.columns["neg_hist_item"], before)
    assert builds == []
    AmazonDataset(AmazonDataset.Config(root=str(root), max_len=7)).load()
    assert builds == [1]


def test_stats_are_printed_as_a_table() -> None:
    console = Console(record=True, width=120)
    print_stats(
        "toy statistics", {"users": 1234, "rows": {"train": 10, "val": 2}, "protocol": "din"}, console
    )
    text = console.export_text()
    assert "toy statistics" in text and "1,234" in text and "train=10, val=2" in text and "din" in text


# ---- download ---------------------------------------------------------------------------------------
def test_fetch_verifies_size_and_checksum(tmp_path) -> None:
    src = tmp_path / "src" / "data.bin"
    src.parent.mkdir()
    src.write_bytes(os.urandom(3_000_000))
    md5 = hashlib.md5(src.read_bytes()).hexdigest()
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    got = fetch(RemoteFile("data.bin", src.as_uri(), size=3_000_000, md5=md5, sha256=sha), tmp_path / "dl")
    assert got.read_bytes() == src.read_bytes()
    src.write_bytes(b"changed")
    assert fetch(RemoteFile("data.bin", src.as_uri(), size=3_000_000), tmp_path / "dl") == got  # kept
    with pytest.raises(DownloadError, match=r"other\.bin from .* did not verify \(md5 .* != published 0+\)"):
        fetch(RemoteFile("other.bin", src.as_uri(), md5="0" * 32), tmp_path / "dl")
    with pytest.raises(DownloadError, match="7 bytes received, known size is 9"):
        fetch(RemoteFile("other.bin", src.as_uri(), size=9), tmp_path / "dl")
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == ["data.bin"]  # no partial files


def test_fetch_without_network_says_which_file_to_put_where(tmp_path) -> None:
    remote = RemoteFile("ml-1m.zip", (tmp_path / "offline" / "ml-1m.zip").as_uri())
    with pytest.raises(DownloadError) as err:
        fetch(remote, tmp_path / "dl")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("cannot download ml-1m.zip from file://")
    assert f"put it in {tmp_path / 'dl'}" in message and "dataset.root" in message
    assert [p.name for p in (tmp_path / "dl").iterdir()] == []


def test_unzip_into_the_archives_top_folder(tmp_path) -> None:
    archive = tmp_path / "ml-100k.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("ml-100k/u.data", "1\t2\t3\t4\n")
        z.writestr("ml-100k/u.item", "x")
    (tmp_path / "out").mkdir()
    folder = unzip(archive, tmp_path / "out")
    assert folder == tmp_path / "out" / "ml-100k"
    assert (folder / "u.data").read_text() == "1\t2\t3\t4\n"
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["ml-100k"]
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    with pytest.raises(DownloadError, match="is not a valid zip archive"):
        unzip(tmp_path / "bad.zip", tmp_path / "out")


def test_vocabularies_are_stored_with_the_arrays_and_mapped_back_as_strings(tmp_path: Path) -> None:
    built = toy()
    built.data.vocabularies = {"item": np.array(["", "a17", "b2"]), "user": np.array([0, 31, 4])}
    cache = ArrayCache("toy", version=1, cache_dir=str(tmp_path))
    first = cache.load_or_build([], {"n": 1}, lambda: built)
    again = cache.load_or_build([], {"n": 1}, lambda: pytest.fail("a hit must not build"))
    for data in (first.data, again.data):
        assert isinstance(data.vocabularies["item"], np.memmap)
        assert data.vocabularies["item"].tolist() == ["", "a17", "b2"]
        assert data.vocabularies["user"].tolist() == ["0", "31", "4"]


def test_the_cache_folder_is_printed_whole_at_80_columns() -> None:
    console = Console(width=80, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    folder = Path("/tmp") / ("deep-folder-" * 8) / "synthetic" / "952b4c5327515c1d752ad65f"
    print_stats("synthetic statistics", {"n_users": 50, "n_rows": {"train": 10}}, console, folder)
    lines = console.export_text().splitlines()
    assert f"synthetic statistics, cached in {folder}" in lines
    assert "n_users" in lines[1] or "n_users" in "".join(lines[1:])


def test_statistics_are_shown_rounded() -> None:
    console = Console(width=80, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    stats = {"n_rows": {"train": 14614, "val": 1830}, "pos_rate": {"train": 0.3039551079273224}}
    stats["auc"] = 0.87521
    print_stats("toy statistics", stats, console)
    text = console.export_text()
    assert "train=14,614, val=1,830" in text and "train=0.3040" in text and "0.8752" in text
    assert "0.30395510" not in text


def test_a_cache_hit_names_its_folder_on_one_line_at_80_columns(tmp_path: Path) -> None:
    root = tmp_path / ("deep-folder-" * 8)
    cache = ArrayCache("toy", version=1, cache_dir=str(root))
    cache.load_or_build([], {"n": 1}, toy)
    cache.console = Console(width=80, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    hit = cache.load_or_build([], {"n": 1}, lambda: pytest.fail("a hit must not build"))
    lines = cache.console.export_text().splitlines()
    assert f"toy: arrays loaded from cache {hit.data.info['cache']}" in lines
