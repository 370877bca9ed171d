"""What produced a record (architecture §8): the data, the code, the device.

A run record carries ``fingerprint = {"data", "code", "device"}``; resume skips a job only when
the previous ``ok`` record has the same config *and* the same fingerprint.

- ``data``: the dataset cache key (sha256 of the raw files + protocol options + format version,
  :mod:`ctrbench.datasets.cache`), so a raw file fixed in place changes it. A dataset plugin that
  does not go through the cache (the embedded synthetic data, a third party's) is fingerprinted by
  hashing its arrays.
- ``code``: the version of ctrbench and of every distribution that provides one of the job's
  plugins, each with a short hash of its package's source files (``.py``, ``.c``) — an editable
  install keeps its version while its code changes — plus torch's and Lightning's versions.
- ``device``: ``cpu`` or the CUDA device's name.

A record's ``provenance`` adds what a reader needs to reproduce it (:func:`provenance`): the git
commit of a source checkout and whether its tree was dirty (with a hash of the diff), Python, torch
and Lightning versions, the CPU model, the thread count, the host and the full command line.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Iterable
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ctrbench import registry
from ctrbench.schema import DatasetSplits

SOURCE_SUFFIXES = (".py", ".c")
COMMAND_ENV = "CTRBENCH_COMMAND"  # set by the CLI, inherited by launcher workers


@cache
def source_hash(package: str) -> str | None:
    """12 hex digits of sha256 over a top-level package's source files (path and bytes), or None."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    roots = list(spec.submodule_search_locations or [])
    files: list[tuple[str, Path]] = []
    if roots:
        for root in map(Path, roots):
            files += [
                (str(p.relative_to(root)), p)
                for p in root.rglob("*")
                if p.suffix in SOURCE_SUFFIXES and p.is_file() and "__pycache__" not in p.parts
            ]
    elif spec.origin and Path(spec.origin).is_file():
        files.append((Path(spec.origin).name, Path(spec.origin)))
    if not files:
        return None
    h = hashlib.sha256()
    for rel, path in sorted(files):
        h.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def _versioned(version: str, package: str | None) -> str:
    digest = source_hash(package) if package else None
    return f"{version}+src.{digest}" if digest else version


def code_versions(plugins: Iterable[registry.PluginSpec]) -> dict[str, str]:
    """``{distribution: version[+src.hash]}`` for ctrbench and the given plugins' distributions,
    plus torch and Lightning."""
    out = {"ctrbench": _versioned(metadata.version("ctrbench"), "ctrbench")}
    for spec in plugins:
        if spec.dist in out:
            continue
        out[spec.dist] = _versioned(spec.version, spec.value.split(":")[0].split(".")[0])
    out["torch"] = torch.__version__
    out["pytorch-lightning"] = lightning_version()
    return dict(sorted(out.items()))


def data_fingerprint(data: DatasetSplits) -> str:
    """The dataset cache key when the plugin reports one, else a hash of the split arrays
    (computed once per loaded dataset and kept in ``data.info``)."""
    known = data.info.get("fingerprint")
    if isinstance(known, str) and known:
        return known
    h = hashlib.sha256()
    parts: list[tuple[str, np.ndarray]] = []
    for name in ("train", "val", "test"):
        split = getattr(data, name)
        parts += [(f"{name}.{k}", v) for k, v in sorted(split.columns.items())]
        parts += [(f"{name}.{k}", v) for k, v in (("seq", split.seq), ("end", split.end)) if v is not None]
    if data.sequences is not None:
        parts.append(("sequences.offsets", data.sequences.offsets))
        parts += [(f"sequences.{k}", v) for k, v in sorted(data.sequences.columns.items())]
    for key, array in parts:
        array = np.ascontiguousarray(array)
        h.update(f"{key}:{array.dtype.str}:{array.shape}".encode())
        h.update(memoryview(array).cast("B"))
    digest = "arrays-" + h.hexdigest()[:24]
    data.info["fingerprint"] = digest
    return digest


def device_name(on_gpu: bool) -> str:
    return f"cuda:{torch.cuda.get_device_name()}" if on_gpu else "cpu"


def fingerprint(data: DatasetSplits, plugins: Iterable[registry.PluginSpec], on_gpu: bool) -> dict[str, Any]:
    return {"data": data_fingerprint(data), "code": code_versions(plugins), "device": device_name(on_gpu)}


def differences(previous: Any, current: dict[str, Any]) -> list[str]:
    """What differs between a record's fingerprint and the current one, in words (empty: the same)."""
    if not isinstance(previous, dict):
        return ["the record has no fingerprint (written by an older version)"]
    out = []
    if previous.get("data") != current["data"]:
        out.append(f"the data changed ({previous.get('data')} -> {current['data']})")
    old_code, new_code = previous.get("code") or {}, current["code"]
    changed = [
        f"{name} {old_code.get(name, '-')} -> {new_code.get(name, '-')}"
        for name in sorted(set(old_code) | set(new_code))
        if old_code.get(name) != new_code.get(name)
    ]
    if changed:
        out.append("the code changed (" + ", ".join(changed) + ")")
    if previous.get("device") != current["device"]:
        out.append(f"the device changed ({previous.get('device')} -> {current['device']})")
    if previous.get("init_from") != current.get("init_from"):  # the run a warm start begins from
        out.append(f"the warm start changed ({previous.get('init_from')} -> {current.get('init_from')})")
    return out


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.decode("utf-8", "replace") if done.returncode == 0 else None


@cache
def git_state() -> dict[str, Any] | None:
    """``{"commit", "dirty", "diff_sha256"}`` when ctrbench runs from a git checkout, else None."""
    spec = importlib.util.find_spec("ctrbench")
    if spec is None or not spec.submodule_search_locations:
        return None
    source = Path(next(iter(spec.submodule_search_locations))).parent
    if not (source / ".git").exists():
        return None
    return checkout_state(source)


# Outputs are not code: a sweep re-run in place over a committed results folder (results/reference)
# rewrites tracked files there, and that does not make the code it ran differ from the commit.
OUTPUTS = ":(exclude)results"


def checkout_state(source: Path) -> dict[str, Any] | None:
    """The commit of the checkout at ``source``, whether its tracked files differ from it (outside
    ``results/``) and a hash of that diff; None when git cannot tell."""
    commit = _git(["rev-parse", "HEAD"], source)
    if commit is None:
        return None
    status = _git(["status", "--porcelain", "--untracked-files=no", "--", ".", OUTPUTS], source) or ""
    diff = _git(["diff", "HEAD", "--", ".", OUTPUTS], source) or ""
    return {
        "commit": commit.strip(),
        "dirty": bool(status.strip()),
        "diff_sha256": hashlib.sha256(diff.encode()).hexdigest()[:16] if diff else None,
    }


@cache
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def lightning_version() -> str:
    """Lightning's version, imported here only: a sweep's own process (which launches the jobs and
    writes the summaries) never trains, and importing Lightning costs it ~2 s."""
    import pytorch_lightning as pl

    return pl.__version__


def provenance(on_gpu: bool) -> dict[str, Any]:
    """How to reproduce the run: versions, git state, machine, threads, the command line."""
    return {
        "ctrbench": metadata.version("ctrbench"),
        "git": git_state(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pytorch-lightning": lightning_version(),
        "numpy": np.__version__,
        "device": device_name(on_gpu),
        "cpu": cpu_model(),
        "threads": torch.get_num_threads(),
        "host": platform.node(),
        "platform": platform.platform(),
        # the command the user typed (a launcher's worker process has its own argv)
        "command": os.environ.get(COMMAND_ENV) or shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }


def environment_lines() -> list[str]:
    """Every installed distribution as ``name==version``, sorted (the environment of a sweep)."""
    seen = {(d.metadata["Name"] or "?", d.version) for d in metadata.distributions()}
    return [f"{name}=={version}" for name, version in sorted(seen, key=lambda nv: nv[0].lower())]


def write_environment(folder: Path) -> Path:
    """``environment.txt`` (every installed distribution) in a sweep folder, once; a later command in
    another environment adds ``environment-<UTC time>.txt`` instead of overwriting it."""
    from datetime import datetime, timezone

    text = "\n".join(environment_lines()) + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "environment.txt"
    if path.is_file() and path.read_text() != text:
        path = folder / f"environment-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}.txt"
    if not path.is_file():
        path.write_text(text)
    return path
