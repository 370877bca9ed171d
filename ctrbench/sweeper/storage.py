"""Optuna storages, samplers and pruners by name, shared by the sweeper and the jobs it launches.

Storage specs (``hydra.sweeper.storage``):

- ``null`` — in memory, in the launching process only (no pruning for jobs in other processes);
- ``sqlite:///study.db`` or any SQLAlchemy URL (``postgresql://…``, ``mysql://…``) — Optuna's ``RDBStorage``;
- a file path without ``://``: ``*.db``/``*.sqlite``/``*.sqlite3`` mean SQLite, any other name (``study.log``)
  a journal file, ``JournalStorage(JournalFileBackend(path))`` — Optuna's choice for many processes on one
  machine, where SQLite may report "database is locked".

Relative paths are made absolute in the launching process, so jobs and later processes find the same file.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # optuna is imported when a sweep or a trial needs it
    import optuna

__all__ = [
    "LOCAL_TRIALS",
    "TRIAL_ATTR",
    "make_pruner",
    "make_sampler",
    "make_storage",
    "resolve_storage",
]

_SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
# In-memory studies: trials asked by a sweeper in this process, by (study name, trial number). A job run
# in the same process (Hydra's basic launcher) reports to its trial through this table.
LOCAL_TRIALS: dict[tuple[str, int], optuna.trial.Trial] = {}
TRIAL_ATTR = "ctrbench"  # trial user attribute the sweeper sets for the job: {"metric": ..., "pruner": {...}}


def resolve_storage(spec: str | None) -> str | None:
    """The canonical, absolute form of a storage spec: ``sqlite:///rel.db`` → ``sqlite:////abs/rel.db``,
    ``x.db`` → ``sqlite:////abs/x.db``, ``x.log`` → ``/abs/x.log``; ``None``/``""`` → ``None``."""
    if spec is None or not str(spec).strip():
        return None
    spec = str(spec).strip()
    if "://" not in spec:
        path = Path(spec).expanduser().resolve()
        return f"sqlite:///{path}" if path.suffix in _SQLITE_SUFFIXES else str(path)
    if spec.startswith("sqlite:///"):
        path_text = spec.removeprefix("sqlite:///")
        if path_text and path_text != ":memory:" and not path_text.startswith("/"):
            return f"sqlite:///{Path(path_text).expanduser().resolve()}"
    return spec


def make_storage(spec: str | None) -> optuna.storages.BaseStorage | None:
    """An Optuna storage for a spec (see the module docstring); ``None`` means in memory."""
    import optuna

    spec = resolve_storage(spec)
    if spec is None:
        return None
    if "://" not in spec:
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        Path(spec).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(spec))
    if spec.startswith("sqlite:///"):
        Path(spec.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.get_storage(spec)


def make_sampler(name: str, seed: int | None) -> optuna.samplers.BaseSampler:
    """``tpe`` (Optuna's default, TPE) or ``random``, seeded with ``seed`` (``None``: unseeded)."""
    import optuna

    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"hydra.sweeper.sampler={name!r}: use tpe or random")


def make_pruner(
    name: str = "none", n_startup_trials: int = 5, n_warmup_steps: int = 0, **_: Any
) -> optuna.pruners.BasePruner:
    """``median`` (``MedianPruner(n_startup_trials, n_warmup_steps)``: stop a trial whose best value so far
    is worse than the median of completed trials at the same epoch) or ``none`` (``NopPruner``)."""
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=n_startup_trials, n_warmup_steps=n_warmup_steps)
    if name in ("none", "nop"):
        return optuna.pruners.NopPruner()
    raise ValueError(f"hydra.sweeper.pruner={name!r}: use median or none")
