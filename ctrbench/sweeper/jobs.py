"""The jobs of one sweep command: job numbers that never reuse a folder, and the list of job folders a
command launched, handed from ctrbench's sweepers to the summary callback in the same process.

Hydra runs the sweeper and then the callbacks' ``on_multirun_end`` in the launching process, so a
sweeper :func:`publish`-es the folders of the jobs it launched (from the launcher's ``JobReturn``\\ s,
whichever launcher ran them) and :class:`~ctrbench.results.callback.SummaryCallback` :func:`take`-s
them: the summary then describes exactly this command's jobs, also when the sweep folder holds jobs of
an earlier command.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

__all__ = [
    "SweepJobs",
    "claim_numbers",
    "forget",
    "job_dir",
    "next_job_number",
    "numbered_subdirs",
    "publish",
    "take",
]

log = logging.getLogger("ctrbench")
_NUM_SUBDIR = "${hydra.job.num}"  # Hydra's default hydra.sweep.subdir: a job's folder is its number


@dataclass(frozen=True)
class SweepJobs:
    """What one sweep command launched: its sweep folder and its jobs' folders (resolved paths)."""

    sweep_dir: Path
    dirs: tuple[Path, ...]


_LAUNCHED: dict[Path, SweepJobs] = {}


def job_dir(ret: Any) -> str | None:
    """The output folder of a launched job (a Hydra ``JobReturn``), or None when it has no Hydra config."""
    hydra_cfg = getattr(ret, "hydra_cfg", None)
    if hydra_cfg is None:
        return None
    value = OmegaConf.select(hydra_cfg, "hydra.runtime.output_dir", default=None)
    return None if value is None else str(value)


def publish(sweep_dir: str | os.PathLike[str], returns: Iterable[Sequence[Any]]) -> SweepJobs:
    """Record the folders of the jobs in ``returns`` (the launcher's batches) as this command's jobs."""
    folders = [job_dir(ret) for batch in returns for ret in batch]
    key = Path(sweep_dir).resolve()
    jobs = SweepJobs(key, tuple(Path(f).resolve() for f in folders if f is not None))
    _LAUNCHED[key] = jobs
    return jobs


def take(sweep_dir: str | os.PathLike[str]) -> SweepJobs | None:
    """The jobs a sweeper of this process published for ``sweep_dir`` (and forget them), else None."""
    return _LAUNCHED.pop(Path(sweep_dir).resolve(), None)


def forget(sweep_dir: str | os.PathLike[str]) -> None:
    """Drop what was published for ``sweep_dir`` (a new command on that folder starts)."""
    _LAUNCHED.pop(Path(sweep_dir).resolve(), None)


def numbered_subdirs(config: DictConfig) -> bool:
    """Whether a job's folder is its number (``hydra.sweep.subdir`` left at Hydra's ``${hydra.job.num}``)."""
    sweep = OmegaConf.to_container(config.hydra.sweep, resolve=False)
    return isinstance(sweep, dict) and str(sweep.get("subdir", "")).strip() == _NUM_SUBDIR


def next_job_number(sweep_dir: str | os.PathLike[str]) -> int:
    """One more than the highest job number used in ``sweep_dir`` (numbered folders, or ``job_num`` of
    the ``result.json`` files below it); 0 for a new folder."""
    root = Path(sweep_dir)
    if not root.is_dir():
        return 0
    used = [int(p.name) for p in root.iterdir() if p.is_dir() and p.name.isdigit()]
    for path in root.rglob("result.json"):
        try:
            num = json.loads(path.read_text(encoding="utf-8")).get("job_num")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(num, int) and not isinstance(num, bool):
            used.append(num)
    return max(used, default=-1) + 1


def claim_numbers(sweep_dir: str | os.PathLike[str], start: int, count: int, make_dirs: bool) -> int:
    """The first number ``n >= start`` such that folders ``n .. n+count-1`` are free, claimed by creating
    them (``make_dirs``; an exclusive ``mkdir``, so two processes sweeping into one folder never get the
    same number); without ``make_dirs`` simply ``start``."""
    if not make_dirs or count < 1:
        return start
    root = Path(sweep_dir)
    root.mkdir(parents=True, exist_ok=True)
    n = start
    while True:
        made: list[Path] = []
        try:
            for k in range(n, n + count):
                folder = root / str(k)
                folder.mkdir()
                made.append(folder)
            return n
        except FileExistsError:
            for folder in made:
                folder.rmdir()
            n += len(made) + 1  # past the taken folder
