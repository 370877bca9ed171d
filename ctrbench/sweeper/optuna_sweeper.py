"""ctrbench's Hydra sweeper on Optuna's ask-and-tell interface (``hydra/sweeper=optuna``)."""

from __future__ import annotations

import csv
import logging
import math
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from ctrbench.engine.interrupt import JobInterrupted
from ctrbench.results.callback import summarize_interrupted
from ctrbench.results.record import RESULT_FILE, error_line, read_result
from ctrbench.sweeper.jobs import claim_numbers, next_job_number, numbered_subdirs, publish
from ctrbench.sweeper.storage import (
    LOCAL_TRIALS,
    TRIAL_ATTR,
    StorageError,
    display_storage,
    is_transient,
    make_pruner,
    make_sampler,
    make_storage,
    resolve_storage,
)

if TYPE_CHECKING:  # optuna is imported when a sweep starts, not when ctrbench registers the plugin
    import optuna

    from ctrbench.sweeper.space import SearchSpace

__all__ = ["OptunaSweeper", "best_value", "trial_rows"]

log = logging.getLogger("ctrbench")
TRIALS_FILE = "optuna.csv"
OPEN_ATTEMPTS = 4  # tries to open the study when the storage fails transiently (1 s, 2 s, 3 s apart)


def best_value(epochs: Iterable[Mapping[str, Any]] | None, metric: str, direction: str) -> float | None:
    """The best finite ``metric`` over a job's per-epoch records (max or min by ``direction``), else None."""
    values = []
    for row in epochs or []:
        value = row.get(metric) if isinstance(row, Mapping) else None
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            values.append(float(value))
    if not values:
        return None
    return max(values) if direction == "maximize" else min(values)


class OptunaSweeper(Sweeper):
    """Hydra sweeper: ``n_trials`` Optuna trials, asked ``n_jobs`` at a time and run by ``hydra/launcher``.

    Implements Hydra's ``Sweeper`` plugin interface on Optuna's ask-and-tell API (``study.ask`` /
    ``study.tell``); options are :class:`~ctrbench.sweeper.config.OptunaSweeperConf`.

    - **Search space**: ``hydra.sweeper.params`` (``reg.lam: tag(log, interval(1e-4, 1.0))``, ``choice``,
      ``range``, ``interval``, plain values; see :mod:`ctrbench.sweeper.space`). Sweeps typed on the
      command line join it and win over the config: ``model=din,base`` is a *categorical* parameter that
      the sampler chooses per trial, not a grid (put a grid in an outer loop, or in ``enqueue``).
    - **Batches**: ``n_jobs`` trials are asked, launched together by ``hydra/launcher`` (in parallel with
      ``hydra/launcher=joblib hydra.launcher.n_jobs=<n>``; one after the other with the basic launcher)
      and told when the batch returns; the next batch's sampler sees them all.
    - **Study**: created once in this, the launching, process (``create_study(load_if_exists=True)``,
      retried briefly), before any job starts — so several ``ctrbench -m`` processes (one per GPU with
      ``CUDA_VISIBLE_DEVICES``) can share one named study in one ``storage``; give each its own ``seed``
      (or none), or their samplers propose the same points. ``n_trials`` counts the trials *this* process
      runs. ``enqueue`` entries (``[{reg.lam: 0.01}]``) are queued with ``skip_if_exists`` and run first.
    - **Trials → jobs**: each trial's parameters become overrides, plus ``++optuna.storage``,
      ``++optuna.study`` and ``++optuna.trial`` (its number) so that the job can reach its trial. A
      trial whose overrides do not compose is FAIL without a job.
    - **Objective**: the best value over the job's epochs of ``metric`` (a per-epoch key of
      ``result.json``; default ``val_gauc`` = what the task function returns, the validation GAUC of the
      selected epoch), read from the job's ``result.json``. Status ``failed`` (or no finite value) → FAIL,
      ``pruned`` → PRUNED; the sweep goes on either way.
    - **Pruning** (``pruner: median|none``): jobs report ``metric`` per epoch to their trial and stop when
      ``trial.should_prune()`` (see :mod:`ctrbench.sweeper.pruning`). That needs a ``storage`` every job
      process can open; with the in-memory default it works only for jobs run in this process (Hydra's
      basic launcher), and jobs in launcher workers train unpruned.
    - **Folders**: job numbers continue after the highest one already in ``hydra.sweep.dir`` (a folder
      ``<n>`` or a ``result.json`` with ``job_num`` n), and each batch's folders are claimed with an
      exclusive ``mkdir`` (when ``hydra.sweep.subdir`` is Hydra's ``${hydra.job.num}``): a continued
      study, a new one or a second process sweeping into the same folder never overwrites a trial's job.
    - **Output**: ``optuna.csv`` in the sweep dir — every trial of the study (number, state, value,
      params, job dir, error) with the best marked — printed as a table; ``summary.*`` (ctrbench's
      summary callback) cover the trials of this command. ``optuna-dashboard <storage URL>`` shows the
      same study live.
    """

    def __init__(
        self,
        n_trials: int = 20,
        n_jobs: int = 1,
        sampler: str = "tpe",
        seed: int | None = None,
        direction: str = "maximize",
        metric: str = "val_gauc",
        study_name: str | None = None,
        storage: str | None = None,
        pruner: str = "median",
        n_startup_trials: int = 5,
        n_warmup_steps: int = 0,
        enqueue: Sequence[Mapping[str, Any]] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if n_trials < 0 or n_jobs < 1:
            raise ValueError(f"hydra.sweeper: n_trials={n_trials} must be >= 0 and n_jobs={n_jobs} >= 1")
        if direction not in ("maximize", "minimize"):
            raise ValueError(f"hydra.sweeper.direction={direction!r}: use maximize or minimize")
        if sampler not in ("tpe", "random"):
            raise ValueError(f"hydra.sweeper.sampler={sampler!r}: use tpe or random")
        if pruner not in ("median", "none"):
            raise ValueError(f"hydra.sweeper.pruner={pruner!r}: use median or none")
        self.n_trials, self.n_jobs = n_trials, n_jobs
        self.sampler, self.seed, self.direction, self.metric = sampler, seed, direction, metric
        self.study_name, self.storage = study_name, resolve_storage(storage)
        self.pruner = {"name": pruner, "n_startup_trials": n_startup_trials, "n_warmup_steps": n_warmup_steps}
        self.enqueue = [dict(e) for e in (_plain(enqueue) or [])]
        self.params = dict(_plain(params) or {})
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher: Launcher | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    # ---- the study ----------------------------------------------------------------------------
    def open_study(self) -> optuna.Study:
        """Create the study, or load it when it exists. A transient error (:func:`is_transient`: the
        database busy or unreachable, two processes racing to create the study) is retried; any other
        storage problem (a missing database driver, a malformed URL) is a :class:`StorageError` at once."""
        import optuna

        where = display_storage(self.storage)
        for attempt in range(OPEN_ATTEMPTS):
            try:
                study = optuna.create_study(
                    storage=make_storage(self.storage),
                    study_name=self.study_name,
                    direction=self.direction,
                    sampler=make_sampler(self.sampler, self.seed),
                    pruner=make_pruner(**self.pruner),
                    load_if_exists=True,
                )
                break
            except Exception as exc:
                if not is_transient(exc):
                    raise
                if attempt == OPEN_ATTEMPTS - 1:
                    tries = f"{OPEN_ATTEMPTS} attempts"
                    raise StorageError(
                        f"Optuna storage {where} cannot be opened ({tries}): {error_line(exc)}"
                    ) from None
                log.warning("opening the Optuna study in %s failed (%s), retrying", where, error_line(exc))
                time.sleep(1.0 + attempt)
        if study.direction.name.lower() != self.direction:
            raise ValueError(
                f"study {study.study_name!r} in {self.storage} is to {study.direction.name.lower()}, "
                f"but hydra.sweeper.direction={self.direction}"
            )
        return study

    def _enqueue(self, study: optuna.Study, space: SearchSpace) -> None:
        from optuna.distributions import CategoricalDistribution

        from ctrbench.sweeper.space import flatten_params

        for entry in self.enqueue:
            params = flatten_params(entry)
            unknown = sorted(set(params) - set(space.distributions))
            if unknown:
                raise ValueError(f"hydra.sweeper.enqueue: {unknown} not in the search space")
            for key, value in params.items():
                dist = space.distributions[key]
                if isinstance(dist, CategoricalDistribution) and value not in dist.choices:
                    raise ValueError(f"hydra.sweeper.enqueue: {key}={value!r} is not one of {dist.choices}")
            study.enqueue_trial(params, skip_if_exists=True)

    # ---- the sweep ----------------------------------------------------------------------------
    def sweep(self, arguments: list[str]) -> list[Sequence[JobReturn]]:
        import optuna
        from hydra.core.override_parser.overrides_parser import OverridesParser

        from ctrbench.sweeper.space import format_value, parse_search_space

        assert self.config is not None and self.launcher is not None and self.hydra_context is not None
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        space = parse_search_space(self.params, arguments, parser)
        if not space.distributions:
            log.warning("Optuna sweep with an empty search space: every trial runs the same configuration")
        try:
            study = self.open_study()
        except StorageError as exc:  # nothing ran yet: the command ends with this one line (exit 2)
            print(f"ctrbench: error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        self._enqueue(study, space)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        where = display_storage(self.storage)
        log.info(
            "Optuna study %r (%s): %d trials, %d at a time, %s %s; search space: %s",
            study.study_name,
            where,
            self.n_trials,
            self.n_jobs,
            self.direction,
            self.metric,
            ", ".join(f"{k}: {v}" for k, v in space.distributions.items()) or "none",
        )
        identity = [
            f"++optuna.storage={format_value(self.storage)}",
            f"++optuna.study={format_value(study.study_name)}",
        ]
        returns: list[Sequence[JobReturn]] = []
        # job numbers (and folders) continue after those already in the sweep folder: a new trial never
        # lands in an earlier trial's folder, also when a second process sweeps into the same folder
        numbered = numbered_subdirs(self.config)
        job_idx = next_job_number(sweep_dir)
        launched: list[tuple[Path, list[str]]] = []  # this command's jobs, for an interrupted summary
        try:
            self._trials(study, space, identity, sweep_dir, numbered, job_idx, returns, launched)
        except JobInterrupted:
            # SIGTERM/SIGINT: Hydra calls no on_multirun_end; summarize what finished, then exit 128+N
            summarize_interrupted(self.config, launched if numbered else None)
            raise
        self.report(study, sweep_dir)
        publish(sweep_dir, returns)  # this command's trials, for the summary
        return returns

    def _trials(
        self,
        study: Any,
        space: Any,
        identity: list[str],
        sweep_dir: Path,
        numbered: bool,
        job_idx: int,
        returns: list[Sequence[JobReturn]],
        launched: list[tuple[Path, list[str]]],
    ) -> None:
        """Ask, launch and tell the trials, ``n_jobs`` at a time; ``returns`` and ``launched`` grow."""
        import optuna

        for start in range(0, self.n_trials, self.n_jobs):
            trials = [study.ask(space.distributions) for _ in range(min(self.n_jobs, self.n_trials - start))]
            try:
                runnable: list[tuple[optuna.trial.Trial, list[str]]] = []
                for trial in trials:
                    trial.set_user_attr(TRIAL_ATTR, {"metric": self.metric, "pruner": self.pruner})
                    params = {key: trial.params[key] for key in space.distributions}
                    overrides = [*space.overrides(params), *identity, f"++optuna.trial={trial.number}"]
                    try:
                        self.validate_batch_is_legal([overrides])
                    except Exception as exc:  # e.g. a value the config's schema rejects
                        error = error_line(exc).strip()
                        self._tell(study, trial, optuna.trial.TrialState.FAIL, None, error, None)
                        continue
                    if self.storage is None:
                        LOCAL_TRIALS[(study.study_name, trial.number)] = trial
                    runnable.append((trial, overrides))
                if runnable:
                    job_idx = claim_numbers(sweep_dir, job_idx, len(runnable), numbered)
                    launched += [(sweep_dir / str(job_idx + i), o) for i, (_, o) in enumerate(runnable)]
                    results = self.launcher.launch([o for _, o in runnable], initial_job_idx=job_idx)
                    job_idx += len(runnable)
                    returns.append(results)
                    for (trial, _), ret in zip(runnable, results, strict=True):
                        self._tell(study, trial, *self._outcome(ret))
            except BaseException:  # Ctrl-C or a launcher error: leave no trial RUNNING in the study
                for trial in trials:
                    study.tell(trial, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
                raise
            finally:
                for trial in trials:
                    LOCAL_TRIALS.pop((study.study_name, trial.number), None)

    def _outcome(
        self, ret: JobReturn
    ) -> tuple[optuna.trial.TrialState, float | None, str | None, str | None]:
        """(state, value, error, job dir) of a finished job, from its ``result.json``."""
        from optuna.trial import TrialState

        job_dir = OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir") if ret.hydra_cfg else None
        if ret.status != JobStatus.COMPLETED:
            return TrialState.FAIL, None, error_line(ret._return_value).strip(), job_dir
        record = read_result(job_dir) if job_dir is not None else None
        if record is None:  # no record: fall back on the task function's return value
            value = ret.return_value
            ok = isinstance(value, int | float) and math.isfinite(value) and self.metric == "val_gauc"
            if ok:
                return TrialState.COMPLETE, float(value), None, job_dir
            return TrialState.FAIL, None, f"no {RESULT_FILE} with {self.metric}", job_dir
        status = record.get("status")
        if status == "pruned":
            return TrialState.PRUNED, None, None, job_dir
        if status != "ok":
            return TrialState.FAIL, None, str(record.get("error") or f"status {status}"), job_dir
        value = best_value(record.get("epochs"), self.metric, self.direction)
        if value is None:
            return TrialState.FAIL, None, f"no finite {self.metric!r} in the job's epochs", job_dir
        return TrialState.COMPLETE, value, None, job_dir

    def _tell(
        self,
        study: optuna.Study,
        trial: optuna.trial.Trial,
        state: optuna.trial.TrialState,
        value: float | None,
        error: str | None,
        job_dir: str | None,
    ) -> None:
        if job_dir is not None:
            trial.set_user_attr("job_dir", str(job_dir))
        if error:
            trial.set_user_attr("error", error)
        study.tell(trial, value, state=state, skip_if_finished=True)
        shown = f" {value:.6g}" if value is not None else ""
        detail = f": {error}" if error else ""
        log.info("trial %d %s%s%s %s", trial.number, state.name, shown, detail, trial.params)

    # ---- the end ------------------------------------------------------------------------------
    def report(self, study: optuna.Study, sweep_dir: Path) -> list[dict[str, Any]]:
        """Write ``optuna.csv`` (every trial of the study, best marked) and print it as a rich table."""
        from rich.console import Console
        from rich.table import Table

        rows = trial_rows(study)
        columns = list(rows[0]) if rows else ["number", "state", "value", "best"]
        with open(sweep_dir / TRIALS_FILE, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
        shown = [c for c in columns if c not in ("job_dir", "duration_s")]
        shown = [c for c in shown if c in ("number", "state") or any(r[c] not in (None, "") for r in rows)]
        table = Table(title=f"Optuna study {study.study_name} ({self.direction} {self.metric})")
        for column in shown:
            table.add_column(column.removeprefix("params."), overflow="fold")
        for row in rows:
            style = "bold green" if row["best"] else "red" if row["state"] == "FAIL" else None
            table.add_row(*(_cell(row[c]) for c in shown), style=style)
        Console(width=max(120, Console().width)).print(table)
        if self.storage is not None:
            log.info(
                "trials in %s; browse them with: optuna-dashboard %s",
                sweep_dir / TRIALS_FILE,
                display_storage(self.storage),
            )
        return rows


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """One dict per trial: number, state, value, best (``yes`` on the best trial), ``params.<key>``…,
    duration in seconds, the job's folder and the error of a failed trial."""
    from optuna.trial import TrialState

    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    best = study.best_trial.number if complete else None
    names: list[str] = []
    for trial in trials:
        names += [name for name in trial.params if name not in names]
    rows = []
    for t in trials:
        duration = t.duration.total_seconds() if t.duration is not None else None
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "value": t.value,  # a PRUNED trial's is its last reported epoch's
                "best": "yes" if t.number == best else "",
                **{f"params.{name}": t.params.get(name) for name in names},
                "duration_s": round(duration, 3) if duration is not None else None,
                "job_dir": t.user_attrs.get("job_dir"),
                "error": t.user_attrs.get("error"),
            }
        )
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _plain(node: Any) -> Any:
    """OmegaConf containers (as ``instantiate`` passes them) → plain Python."""
    if isinstance(node, DictConfig) or OmegaConf.is_list(node):
        return OmegaConf.to_container(node, resolve=True)
    return node
