"""Build-once cache of a dataset's arrays (architecture §3, §7).

Key = sha256 of the raw files' contents (streamed; keyed by file name, so moving the folder keeps
the cache) + the protocol options that change the arrays + the plugin's format version. A folder of
Parquet shards (too large to hash whole) is keyed by each shard's relative path, size, mtime and the
sha256 of its Parquet footer instead (:func:`parquet_footer_digests`). A build
writes ``<cache_dir>/<dataset>/<key>/`` — ``manifest.json`` (schema, which .npy holds what),
numbered ``.npy`` arrays and ``stats.json`` — into a temporary folder that is renamed when
complete, so a cache folder is never half-written. A hit memory-maps the arrays (copy-on-write,
so in-place resampling works) and loads in well under a second.

One copy per machine: every process that loads a cached dataset maps the same ``.npy`` files, so N
sweep workers share one physical copy of the arrays (the page cache); a page becomes private to a
process only when that process writes it (per-epoch resampling). A build runs once: the builder
holds an exclusive lock (``<cache_dir>/.locks/<dataset>.<key>.lock``, ``flock``) while others
building the same key wait for it and then map its result, and the builder itself drops its in-heap
arrays and maps the files it wrote. Without ``flock`` (or across hosts on a network file system)
two builds of one key may run at once; the first rename wins and the other process maps that one.

The temporary folder, ``.<key>.tmp-<pid>@<host>-<random>``, is removed when the build fails; one
left by a killed process is removed by the next build of the same dataset (any key) when its
process is gone (same host name, no such PID) or when it is older than ``STALE_TMP_S`` (6 hours,
for other hosts sharing the cache or a reused PID: writing the arrays takes minutes at most).

File digests are memoised in ``<cache_dir>/file_digests.json`` by (path, size, mtime) so that a
hit does not re-read gigabytes of raw files. ``cache_dir`` defaults to ``$CTRBENCH_CACHE``, else
``~/.cache/ctrbench``; plugins expose it as ``dataset.cache_dir``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import dataclasses
import gc
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from ctrbench.schema import DatasetSplits, Field, Schema, Sequences, Split

CACHE_ENV = "CTRBENCH_CACHE"
MANIFEST = "manifest.json"
STATS = "stats.json"
DIGESTS = "file_digests.json"
_CHUNK = 1 << 22
_FOOTER_FALLBACK = 1 << 16  # bytes hashed at the end of a file that is not Parquet
SPLIT_NAMES = ("train", "val", "test")
STALE_TMP_S = 6 * 3600
LOCKS = ".locks"
_TMP_NAME = re.compile(r"^\.[^.]+\.tmp-(?:(?P<pid>\d+)@(?P<host>[A-Za-z0-9._-]*)-)?[^-]+$")


def cache_root(option: str = "") -> Path:
    """``dataset.cache_dir`` if set, else ``$CTRBENCH_CACHE``, else ``~/.cache/ctrbench``."""
    chosen = option or os.environ.get(CACHE_ENV, "") or str(Path.home() / ".cache" / "ctrbench")
    return Path(chosen).expanduser()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _write_json(path: Path, obj: Any, sort_keys: bool = True) -> None:
    """Write JSON atomically (temp file in the same folder, then rename; removed on failure)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1, sort_keys=sort_keys)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname()) or "localhost"


def _alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists under another user
        return True
    return True


def tmp_prefix(key: str) -> str:
    """Name prefix of a build's temporary folder: it carries the owner's PID and host name."""
    return f".{key}.tmp-{os.getpid()}@{_host()}-"


def remove_stale_tmp(folder: Path, max_age_s: float = STALE_TMP_S) -> list[Path]:
    """Remove the temporary build folders in ``folder`` left by dead builds: the owning process is
    gone (same host, no such PID), or the folder is older than ``max_age_s``. Returns them."""
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    host, now = _host(), time.time()
    for path in entries:
        found = _TMP_NAME.match(path.name)
        if found is None:
            continue
        try:
            age = now - path.stat().st_mtime
        except OSError:
            continue  # removed meanwhile
        pid = found["pid"]
        dead = pid is not None and found["host"] == host and not _alive(int(pid))
        if dead or age > max_age_s:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def file_digests(paths: Iterable[Path], root: Path) -> dict[str, str]:
    """sha256 per file name, memoised in ``root/file_digests.json`` by (path, size, mtime)."""
    memo_path = root / DIGESTS
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    out, changed = {}, False
    for path in paths:
        st = path.stat()
        key = str(path.resolve())
        entry = memo.get(key)
        if not entry or entry.get("size") != st.st_size or entry.get("mtime_ns") != st.st_mtime_ns:
            entry = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256_file(path)}
            memo[key], changed = entry, True
        out[path.name] = entry["sha256"]
    if changed:
        root.mkdir(parents=True, exist_ok=True)
        _write_json(memo_path, memo)
    return out


def parquet_footer_digests(root: Path, files: Iterable[Path]) -> dict[str, str]:
    """Fingerprints of a folder of Parquet shards without reading their data: per shard (keyed by its
    path relative to ``root``, so moving the folder keeps the cache) its size, mtime and the sha256 of
    its footer (the file metadata: schema, row groups, column statistics and offsets; at most a few MB
    even for a 20 GB shard). A changed, added, removed or touched shard changes the key."""
    out = {}
    for path in files:
        st = path.stat()
        with open(path, "rb") as f:
            tail = min(st.st_size, 8)
            f.seek(st.st_size - tail)
            end = f.read(tail)
            size = int.from_bytes(end[:4], "little") + 8 if end[4:] == b"PAR1" else _FOOTER_FALLBACK
            size = min(size, st.st_size)
            f.seek(st.st_size - size)
            footer = hashlib.sha256(f.read(size)).hexdigest()
        out[path.relative_to(root).as_posix()] = f"{st.st_size}:{st.st_mtime_ns}:{footer}"
    return out


def protocol_options(config: Any, ignore: Sequence[str] = ()) -> dict[str, Any]:
    """The config as a dict minus options that do not change the arrays (paths, URLs, cache_dir)."""
    opts = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    return {k: v for k, v in opts.items() if k not in set(ignore) | {"root", "cache_dir"}}


def cache_key(dataset: str, version: int, digests: dict[str, str], options: dict[str, Any]) -> str:
    blob = json.dumps(
        {"dataset": dataset, "version": version, "files": digests, "options": options},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


@dataclass
class CachedData:
    """What a plugin builds and the cache stores: the splits, plus ``extras`` — arrays the plugin
    needs after loading (e.g. item popularity for per-epoch resampling)."""

    data: DatasetSplits
    extras: dict[str, np.ndarray] = field(default_factory=dict)


class _Writer:
    def __init__(self, folder: Path) -> None:
        self.folder, self.count = folder, 0

    def __call__(self, array: np.ndarray) -> str:
        name = f"{self.count:04d}.npy"
        self.count += 1
        np.save(self.folder / name, np.ascontiguousarray(array), allow_pickle=False)
        return name


def _save(cached: CachedData, folder: Path) -> None:
    data, put = cached.data, _Writer(folder)
    schema = data.schema
    manifest: dict[str, Any] = {
        "schema": {
            "fields": [dataclasses.asdict(f) for f in schema.fields],
            "group": schema.group,
            "label": schema.label,
            "max_len": schema.max_len,
        },
        "splits": {},
        "extras": {k: put(v) for k, v in cached.extras.items()},
        "sequences": None,
        # raw id of every embedding row per table (fixed-width unicode, no pickle), for warm starts
        "vocabularies": {k: put(np.asarray(v).astype(str)) for k, v in (data.vocabularies or {}).items()},
    }
    for name in SPLIT_NAMES:
        split: Split = getattr(data, name)
        manifest["splits"][name] = {
            "columns": {k: put(v) for k, v in split.columns.items()},
            "seq": put(split.seq) if split.seq is not None else None,
            "end": put(split.end) if split.end is not None else None,
        }
    if data.sequences is not None:
        manifest["sequences"] = {
            "offsets": put(data.sequences.offsets),
            "columns": {k: put(v) for k, v in data.sequences.columns.items()},
        }
    _write_json(folder / STATS, data.info, sort_keys=False)
    _write_json(folder / MANIFEST, manifest)


def _load(folder: Path) -> CachedData:
    manifest = json.loads((folder / MANIFEST).read_text())
    info = json.loads((folder / STATS).read_text())

    def get(name: str | None) -> np.ndarray | None:
        # copy-on-write map: pages load on first use, and in-place writes (resampling) stay private
        return None if name is None else np.load(folder / name, mmap_mode="c", allow_pickle=False)

    s = manifest["schema"]
    schema = Schema(
        fields=tuple(Field(**f) for f in s["fields"]),
        group=s["group"],
        label=s["label"],
        max_len=s["max_len"],
    )
    splits = {
        name: Split(
            columns={k: get(v) for k, v in part["columns"].items()},
            seq=get(part["seq"]),
            end=get(part["end"]),
        )
        for name, part in manifest["splits"].items()
    }
    seqs = manifest["sequences"]
    sequences = (
        Sequences(offsets=get(seqs["offsets"]), columns={k: get(v) for k, v in seqs["columns"].items()})
        if seqs is not None
        else None
    )
    vocabularies = {k: get(v) for k, v in manifest.get("vocabularies", {}).items()} or None
    data = DatasetSplits(
        schema,
        splits["train"],
        splits["val"],
        splits["test"],
        sequences=sequences,
        info=info,
        vocabularies=vocabularies,
    )
    return CachedData(data, {k: get(v) for k, v in manifest["extras"].items()})


def _shown(value: Any) -> str:
    """A statistic as a person reads it: 14,614 rows, a rate of 0.3040 (stats.json keeps full precision)."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.1f}"
    return str(value)


def print_stats(
    title: str, stats: dict[str, Any], console: Console | None = None, folder: Path | None = None
) -> None:
    """The statistics as a rich table (nested dicts such as rows per split become one line each); the
    cache ``folder`` on a line of its own, never folded (a path split across lines cannot be copied)."""
    console = console or Console(stderr=True)
    if folder is not None:
        console.print(f"{title}, cached in {folder}", soft_wrap=True)
    table = Table(title=None if folder is not None else title, show_header=False, title_justify="left")
    table.add_column("statistic", style="bold")
    table.add_column("value")
    for key, value in stats.items():
        if isinstance(value, dict):
            text = ", ".join(f"{k}={_shown(v)}" for k, v in value.items())
        else:
            text = _shown(value)
        table.add_row(key, text or "-")
    console.print(table)


@contextlib.contextmanager
def build_lock(path: Path, waiting: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing); ``waiting`` is called once when
    another process holds it. The kernel releases the lock when its holder dies, so a killed build
    never blocks the next one. Where ``flock`` is unavailable this only creates the file."""
    try:
        import fcntl
    except ImportError:  # not POSIX: the temp-folder rename alone keeps the cache consistent
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting is not None:
                waiting()
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def release_freed_memory() -> None:
    """Give the C heap's free pages back to the system (glibc ``malloc_trim``), so that a process
    that built arrays in its heap and then mapped the cache does not keep their pages."""
    gc.collect()
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        trim = getattr(libc, "malloc_trim", None)
    except OSError:
        trim = None
    if trim is not None:
        trim(0)


class ArrayCache:
    """Cache of one dataset plugin's arrays under ``<cache_dir>/<dataset>/``.

    ``optional``: a dataset that can be generated in memory (the synthetic one) still loads when the
    cache folder cannot be written (read-only or full disk): one warning, and the built arrays are
    returned from the heap instead of the shared files.
    """

    def __init__(self, dataset: str, version: int, cache_dir: str = "", optional: bool = False) -> None:
        self.dataset, self.version, self.optional = dataset, version, optional
        self.root = cache_root(cache_dir)
        self.console = Console(stderr=True)

    def folder(self, key: str) -> Path:
        return self.root / self.dataset / key

    def lock_path(self, key: str) -> Path:
        return self.root / LOCKS / f"{self.dataset}.{key}.lock"

    def key(
        self, files: Sequence[Path], options: dict[str, Any], digests: dict[str, str] | None = None
    ) -> str:
        chosen = digests if digests is not None else file_digests(files, self.root)
        return cache_key(self.dataset, self.version, chosen, options)

    def load_or_build(
        self,
        files: Sequence[Path],
        options: dict[str, Any],
        build: Callable[[], CachedData],
        digests: dict[str, str] | None = None,
    ) -> CachedData:
        """Load the arrays for (files, options), building them first when absent.

        ``digests`` (file name → fingerprint) replaces the files' sha256 in the key, e.g.
        :func:`parquet_footer_digests` for a folder of shards too large to read for a key.

        ``build`` returns the splits with their statistics in ``data.info``; they are printed,
        written as ``stats.json`` and returned in ``info`` (with ``cache`` = the folder). Either way
        the arrays returned are copy-on-write maps of the cache files, shared with every other
        process that maps them.
        """
        try:
            key = self.key(files, options, digests)
        except OSError as exc:
            if not self.optional:
                raise
            return self._unshared(build(), exc)
        folder = self.folder(key)
        cached = self._hit(folder, key)
        if cached is not None:
            return cached

        def waiting() -> None:
            self.console.print(
                f"[dim]{self.dataset}: waiting for another process building {folder}[/dim]", soft_wrap=True
            )

        built: CachedData | None = None
        stage = "lock"
        try:
            with build_lock(self.lock_path(key), waiting):
                cached = self._hit(folder, key)  # built by the process we waited for
                if cached is not None:
                    return cached
                stage = "build"
                built = self._run(build)
                stage = "store"
                info = self._store(folder, key, built)
        except OSError as exc:
            if not self.optional or stage == "build":
                raise
            return self._unshared(built if built is not None else self._run(build), exc)
        del built
        release_freed_memory()  # the build's heap arrays are gone: only the maps remain
        cached = _load(folder)
        cached.data.info = {**info, "cache": str(folder), "fingerprint": key}
        return cached

    def _hit(self, folder: Path, key: str) -> CachedData | None:
        """The cached arrays, mapped; None when absent (a damaged folder is removed)."""
        if not (folder / MANIFEST).is_file():
            return None
        try:
            cached = _load(folder)
        except (OSError, ValueError, KeyError, TypeError):
            shutil.rmtree(folder, ignore_errors=True)  # damaged by hand: rebuild
            return None
        self.console.print(f"[dim]{self.dataset}: arrays loaded from cache {folder}[/dim]", soft_wrap=True)
        cached.data.info["cache"] = str(folder)
        cached.data.info["fingerprint"] = key  # raw files' sha256 + protocol options
        return cached

    def _run(self, build: Callable[[], CachedData]) -> CachedData:
        started = time.perf_counter()
        built = build()
        built.data.info["build_seconds"] = round(time.perf_counter() - started, 2)
        return built

    def _store(self, folder: Path, key: str, built: CachedData) -> dict[str, Any]:
        """Write into a temporary folder renamed to ``folder`` when complete; returns the statistics
        stored with the arrays (another process's, when its identical build was renamed first)."""
        for stale in remove_stale_tmp(folder.parent):
            self.console.print(f"[dim]{self.dataset}: removed {stale.name}, left by a killed build[/dim]")
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=tmp_prefix(key), dir=folder.parent))
        try:
            _save(built, tmp)
            try:
                os.rename(tmp, folder)
            except OSError:  # another process finished the same build first: keep theirs
                if not (folder / MANIFEST).is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        print_stats(f"{self.dataset} statistics", built.data.info, self.console, folder)
        return json.loads((folder / STATS).read_text())

    def _unshared(self, built: CachedData, exc: OSError) -> CachedData:
        """The arrays built in this process's heap, when the cache cannot be written."""
        self.console.print(
            f"[yellow]{self.dataset}: cache {self.root} not usable ({exc.strerror or exc}); the arrays stay "
            "in this process's memory, not shared with other processes (set dataset.cache_dir)[/yellow]",
            soft_wrap=True,
        )
        print_stats(f"{self.dataset} statistics (not cached)", built.data.info, self.console)
        return built
