"""Optuna storages, samplers and pruners by name, shared by the sweeper and the jobs it launches.

Storage specs (``hydra.sweeper.storage``):

- ``null`` — in memory, in the launching process only (no pruning for jobs in other processes);
- ``sqlite:///study.db`` or any SQLAlchemy URL (``postgresql://…``, ``mysql://…``) — Optuna's ``RDBStorage``;
- a file path without ``://``: ``*.db``/``*.sqlite``/``*.sqlite3`` mean SQLite, any other name (``study.log``)
  a journal file, ``JournalStorage(JournalFileBackend(path))`` — Optuna's choice for many processes on one
  machine, where SQLite may report "database is locked".

Relative paths are made absolute in the launching process, so jobs and later processes find the same file.

A storage that cannot be opened for a reason that waiting does not change — the URL's database driver
is not installed, the URL is malformed, a file cannot be created — is a :class:`StorageError` with one
line (for a missing driver: the package to install). Only :func:`is_transient` errors (the database is
busy or not reachable, two processes racing to create the study) are worth retrying.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ctrbench.results.record import error_line

if TYPE_CHECKING:  # optuna is imported when a sweep or a trial needs it
    import optuna

__all__ = [
    "LOCAL_TRIALS",
    "TRIAL_ATTR",
    "StorageError",
    "is_transient",
    "make_pruner",
    "make_sampler",
    "make_storage",
    "resolve_storage",
    "display_storage",
]

_SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
# In-memory studies: trials asked by a sweeper in this process, by (study name, trial number). A job run
# in the same process (Hydra's basic launcher) reports to its trial through this table.
LOCAL_TRIALS: dict[tuple[str, int], optuna.trial.Trial] = {}
TRIAL_ATTR = "ctrbench"  # trial user attribute the sweeper sets for the job: {"metric": ..., "pruner": {...}}
# The pip package of each database driver module SQLAlchemy imports for a URL (its dialect's default
# driver, or the one named as in ``postgresql+psycopg2://``).
DRIVER_PACKAGES = {
    "psycopg": "'psycopg[binary]'",
    "psycopg2": "psycopg2-binary",
    "pg8000": "pg8000",
    "asyncpg": "asyncpg",
    "MySQLdb": "mysqlclient",
    "pymysql": "PyMySQL",
    "mysql": "mysql-connector-python",
    "mariadb": "mariadb",
    "oracledb": "oracledb",
    "cx_Oracle": "cx_Oracle",
    "pyodbc": "pyodbc",
    "pymssql": "pymssql",
}


class StorageError(ValueError):
    """An Optuna storage that cannot be opened, for a reason retrying does not change; one line."""


def display_storage(spec: str | None) -> str:
    """A storage spec as messages show it: a URL's password replaced by ``***``."""
    if spec is None:
        return "memory"
    if "://" in spec and "@" in spec:
        try:
            from sqlalchemy.engine import make_url

            return make_url(spec).render_as_string(hide_password=True)
        except Exception:  # not a URL SQLAlchemy parses: hide everything between scheme and host
            scheme, rest = spec.split("://", 1)
            return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return spec


def _missing_module(exc: BaseException) -> str | None:
    """The module whose import failed, anywhere in ``exc``'s chain of causes."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ModuleNotFoundError) and seen.name:
            return seen.name
        seen = seen.__cause__ or seen.__context__
    return None


def is_transient(exc: BaseException) -> bool:
    """Whether opening a storage may succeed when tried again: the database is busy, locked or not
    reachable now, or another process is creating the same study (SQLAlchemy's ``OperationalError``
    and ``IntegrityError``, Optuna's ``StorageInternalError``, a timeout or a refused connection)."""
    import optuna
    from sqlalchemy import exc as sa

    transient = (
        sa.OperationalError,
        sa.IntegrityError,
        optuna.exceptions.StorageInternalError,
        TimeoutError,
        ConnectionError,
    )
    return isinstance(exc, transient)


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
    """An Optuna storage for a spec (see the module docstring); ``None`` means in memory.

    Raises :class:`StorageError` (one line) when retrying cannot help; a transient error
    (:func:`is_transient`) propagates as it is, for the caller to retry."""
    spec = resolve_storage(spec)
    if spec is None:
        return None
    where = f"Optuna storage {display_storage(spec)}"
    try:
        return _open(spec)
    except ImportError as exc:  # SQLAlchemy found no driver module for the URL
        module = _missing_module(exc)
        if module is None:
            raise StorageError(f"{where}: {error_line(exc)}") from None
        top = module.split(".")[0]
        package = DRIVER_PACKAGES.get(module, DRIVER_PACKAGES.get(top, top))
        raise StorageError(
            f"{where} needs the database driver {module!r}, which is not installed: pip install {package}"
        ) from None
    except Exception as exc:
        from sqlalchemy.exc import ArgumentError

        if isinstance(exc, ArgumentError):  # a malformed URL, an unknown database or driver name
            raise StorageError(f"{where} is not a usable URL: {error_line(exc)}") from None
        if isinstance(exc, OSError) and not is_transient(exc):  # e.g. no right to create the file
            raise StorageError(f"{where} cannot be opened: {error_line(exc)}") from None
        raise


def _open(spec: str) -> optuna.storages.BaseStorage:
    import optuna

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
