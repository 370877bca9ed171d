"""The job side of Optuna pruning: report the per-epoch metric to the job's trial, stop when it is pruned.

The sweeper gives each job its trial's identity as overrides (``++optuna.storage=… ++optuna.study=…
++optuna.trial=<number>``). :func:`trial_pruning` turns them back into an ``optuna.trial.Trial`` — through
the shared storage, or, for an in-memory study, through the sweeper's trial table when the job runs in the
sweeper's own process (Hydra's basic launcher) — and returns a Lightning callback. After each validation
epoch the callback reports the sweep's metric (``trial.report(value, epoch)``) and asks
``trial.should_prune()``; on yes it stops the trainer, and the job records status ``pruned``. The sweeper,
which reads that status from ``result.json``, then tells Optuna the trial is PRUNED. This is Optuna's own
pattern (``optuna_integration.PyTorchLightningPruningCallback``) without raising ``TrialPruned``: a
ctrbench job always ends normally and writes its record.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import pytorch_lightning as pl

from ctrbench.sweeper.storage import LOCAL_TRIALS, TRIAL_ATTR, make_pruner, make_storage

if TYPE_CHECKING:
    import optuna
    from omegaconf import DictConfig

__all__ = ["TrialPruning", "trial_pruning"]

log = logging.getLogger("ctrbench")


class TrialPruning(pl.Callback):
    """Reports ``metric`` of every validation epoch to ``trial``; stops training when the pruner says so."""

    def __init__(self, trial: optuna.trial.Trial, metric: str) -> None:
        self.trial: optuna.trial.Trial | None = trial
        self.number = trial.number
        self.metric = metric
        self.pruned_epoch: int | None = None
        self._reported: set[int] = set()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # after the module's on_validation_epoch_end, which appended this epoch to ``history``
        history: list[dict[str, float]] = getattr(pl_module, "history", [])
        if trainer.sanity_checking or self.trial is None or not history:
            return
        row = history[-1]
        epoch = int(row.get("epoch", len(history) - 1))
        value = row.get(self.metric)
        if epoch in self._reported or value is None:
            return
        self._reported.add(epoch)
        try:
            self.trial.report(float(value), step=epoch)
            prune = self.trial.should_prune()
        except Exception as exc:  # a storage hiccup must not fail the job: train on without pruning
            log.warning("Optuna pruning off for this job: %s: %s", type(exc).__name__, exc)
            self.trial = None
            return
        if prune:
            self.pruned_epoch = epoch
            trainer.should_stop = True
            shown = f"{value:.4f}" if isinstance(value, float) and math.isfinite(value) else str(value)
            log.info("pruned by Optuna after epoch %d (%s %s)", epoch + 1, self.metric, shown)  # shown from 1

    def summary(self) -> dict[str, Any]:
        """What the job's ``result.json`` records under ``optuna``."""
        return {"trial": self.number, "metric": self.metric, "pruned_epoch": self.pruned_epoch}


def _trial(storage_spec: str | None, study_name: str, number: int) -> optuna.trial.Trial | None:
    """The running trial ``number`` of ``study_name``: from the shared storage, else this process's table."""
    import optuna

    if storage_spec is None:
        return LOCAL_TRIALS.get((study_name, number))
    storage = make_storage(storage_spec)
    assert storage is not None
    study_id = storage.get_study_id_from_name(study_name)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
    attrs = storage.get_trial(trial_id).user_attrs.get(TRIAL_ATTR) or {}
    study = optuna.load_study(
        study_name=study_name, storage=storage, pruner=make_pruner(**(attrs.get("pruner") or {}))
    )
    return optuna.trial.Trial(study, trial_id)


def trial_pruning(cfg: DictConfig) -> TrialPruning | None:
    """A :class:`TrialPruning` when ``cfg.optuna`` names a trial (a job of an Optuna sweep), else None.

    Never raises: when the trial cannot be reached (an in-memory study and a job in another process, a
    storage error) the job trains to the end, unpruned, and says so in one log line.
    """
    spec = cfg.get("optuna") if "optuna" in cfg else None
    if not spec or spec.get("trial") is None or spec.get("study") is None:
        return None
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        trial = _trial(spec.get("storage"), str(spec.study), int(spec.trial))
    except Exception as exc:
        log.warning("Optuna pruning off for this job: %s: %s", type(exc).__name__, exc)
        return None
    if trial is None:
        log.info("Optuna pruning off for this job: an in-memory study is not reachable from this process")
        return None
    attrs = trial.user_attrs.get(TRIAL_ATTR) or {}
    return TrialPruning(trial, str(attrs.get("metric") or "val_gauc"))
