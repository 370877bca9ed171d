"""One training job: build plugins by name, train, and always write ``result.json``.

A job may train on several processes (``trainer.strategy=ddp`` with ``trainer.devices``/``num_nodes``,
or processes started by ``torchrun``/``srun``): every rank trains and evaluates its share
(:mod:`ctrbench.engine.distributed`); rank 0 alone writes the job folder (record, checkpoints,
predictions, logs).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
import traceback
import warnings
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import LearningRateMonitor

from ctrbench import registry
from ctrbench.engine import interrupt, warm_start
from ctrbench.engine.data import CTRDataModule
from ctrbench.engine.distributed import (
    RESUME_ENV,
    describe,
    launch_rank,
    launcher_refusal,
    process_group_backend,
    same_everywhere,
    sparse_refusal,
)
from ctrbench.engine.interrupt import JobInterrupted
from ctrbench.engine.loggers import finish, make_logger
from ctrbench.engine.optim import OptimConfig, make_sparse
from ctrbench.engine.placement import placement
from ctrbench.engine.precise_stats import PreciseStatistics, precise_stats_batches
from ctrbench.engine.progress import EpochProgressBar
from ctrbench.engine.provenance import data_fingerprint, fingerprint, provenance
from ctrbench.engine.resume import finished_record, resumable
from ctrbench.engine.selection import (
    LAST_EPOCH,
    LAST_NAME,
    PREDICTIONS_NAME,
    SELECT,
    CheckpointError,
    SelectedCheckpoint,
    SelectedPredictions,
    predictions_epoch,
    select_epoch,
    verify_checkpoint,
)
from ctrbench.engine.task import CTRTask
from ctrbench.engine.threads import apply_threads, thread_setting
from ctrbench.results import write_result
from ctrbench.results.record import error_line
from ctrbench.schema import DatasetSplits
from ctrbench.sweeper.pruning import trial_pruning

log = logging.getLogger("ctrbench")
# Lightning's start-up banners (accelerator summary, tips) drown the one table a run prints.
logging.getLogger("pytorch_lightning.utilities.rank_zero").setLevel(logging.WARNING)
logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
# Lightning's hint, twice per job wherever Slurm's client is installed, that a job is not under srun:
# jobs run under srun when their launcher (hydra/launcher=slurm) or the user starts them so
warnings.filterwarnings("ignore", message=".*The `srun` command is available on your system.*")
METRICS = ("auc", "gauc", "logloss")
_DATA_CACHE: dict[str, DatasetSplits] = {}


def _options(node: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]


def load_data(cfg: DictConfig) -> DatasetSplits:
    """Build the dataset once per process per option set (sweep jobs in one process share it)."""
    key = OmegaConf.to_yaml(cfg.dataset, resolve=True)
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()
        dataset = registry.build("dataset", cfg.dataset.name, _options(cfg.dataset))
        data = dataset.load()
        data.schema = dataclasses.replace(data.schema, source=cfg.dataset.name)
        _DATA_CACHE[key] = data
    return _DATA_CACHE[key]


def build_task(cfg: DictConfig, data: DatasetSplits) -> tuple[CTRTask, list[torch.nn.Embedding]]:
    """The regularizer (fitted), the model (built from the schema the regularizer adapts) and the task
    around them, seeded by ``cfg.seed``; also returns the tables switched to sparse gradients."""
    regularizer = registry.build("reg", cfg.reg.name, _options(cfg.reg))
    if hasattr(regularizer, "fit"):
        regularizer.fit(data)
    schema = regularizer.adapt_schema(data.schema) if hasattr(regularizer, "adapt_schema") else data.schema
    optim = OptimConfig(**_options(cfg.optim))
    activation = registry.build("act", cfg.act.name, _options(cfg.act))
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    model = registry.build("model", cfg.model.name, _options(cfg.model), schema=schema, activation=activation)
    sparse_tables = make_sparse(model, optim)
    return CTRTask(model, schema, regularizer, optim, _options(cfg.loss_weights)), sparse_tables


LOG_EVERY_N_STEPS = 50  # the default (Lightning's and conf/trainer), lowered to an epoch's batches when fewer


def log_every_n_steps(n_rows: int, batch_size: int, limit_train_batches: Any = None) -> int:
    """``min(50, training batches per epoch)`` (at least 1), the logging interval of a job left at the
    default: Lightning warns in every job whose epoch has fewer batches than its interval, which a
    tiny dataset always has. A config keeps the default's 50 (the resolved config is part of what
    resume compares); another value the user sets is used as given."""
    batches = -(-n_rows // max(batch_size, 1))
    if isinstance(limit_train_batches, int) and not isinstance(limit_train_batches, bool):
        batches = min(batches, limit_train_batches)
    elif isinstance(limit_train_batches, float):
        batches = int(batches * limit_train_batches)
    return max(1, min(LOG_EVERY_N_STEPS, batches))


def _on_gpu(cfg: DictConfig) -> bool:
    accelerator = cfg.trainer.get("accelerator", "auto")
    return torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda")


class SameStart(pl.Callback):
    """On several processes, before any weights are restored: every rank must start from the same
    checkpoint (each rank decides from the shared job folder when an outside launcher started it);
    otherwise every rank stops with one line instead of training diverged states."""

    def __init__(self, resume_from: Path | None) -> None:
        self.resume_from = resume_from

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if trainer.world_size > 1:
            same_everywhere(str(self.resume_from or ""), "the checkpoint to resume from", pl_module.device)


def _clean(out_dir: Path) -> None:
    """An earlier run's checkpoints, predictions and raw ids never pass for this one's."""
    shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
    shutil.rmtree(out_dir / warm_start.VOCAB_DIR, ignore_errors=True)
    (out_dir / PREDICTIONS_NAME).unlink(missing_ok=True)


def _fingerprint(
    cfg: DictConfig, data: DatasetSplits, out_dir: Path, source: warm_start.Source | None = None
) -> dict[str, Any]:
    """Data, code and device; and the run a warm start begins from (another start is another run)."""
    current = fingerprint(data, _plugin_specs(cfg), _on_gpu(cfg))
    source = source or warm_start.source(cfg.get("init_from"), out_dir)
    if source is not None:
        current["init_from"] = source.fingerprint()
    return current


def train(
    cfg: DictConfig,
    out_dir: Path,
    progress: dict[str, Any] | None = None,
    resume_from: Path | None = None,
) -> dict[str, Any]:
    """Train one configuration; returns the metric part of the run record (``progress["epochs"]``,
    when given, is the per-epoch history as it grows, for the record of an interrupted job).

    The reported epoch and the weights in ``checkpoints/best.ckpt`` are chosen by one rule
    (:func:`ctrbench.engine.selection.select_epoch`); the folder starts empty, so the file named in
    the record is the one this job wrote — unless the job continues from ``resume_from`` (its own
    ``checkpoints/last.ckpt``, left by an interrupted run of the same config, data and code), when
    Lightning restores the weights, the optimizer, the epoch and the task's history from it.

    On several processes every rank calls this; only rank 0 writes into ``out_dir``, and the other
    ranks return the history and the ``distributed`` part alone.
    """
    writer = launch_rank() == 0
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    data = load_data(cfg)
    task, sparse_tables = build_task(cfg, data)
    if progress is not None:
        progress["epochs"] = task.history
    started_from = None
    source = warm_start.source(cfg.get("init_from"), out_dir)
    if source is not None:  # a resumed job's weights come from its own last.ckpt: checked, not copied
        started_from = warm_start.apply(
            task.model,
            task.schema,
            data,
            source,
            cfg.model.name,
            data_fingerprint(data),
            copy=resume_from is None,
        )
        if progress is not None:
            progress["init_from"] = started_from
    trainer_args = _options(cfg.trainer)
    if trainer_args.get("log_every_n_steps") in (None, LOG_EVERY_N_STEPS):  # the default: fit it to the data
        trainer_args["log_every_n_steps"] = log_every_n_steps(
            len(data.train), cfg.batch_size, trainer_args.get("limit_train_batches")
        )
    on_gpu = _on_gpu(cfg)
    dm = CTRDataModule(data, cfg.batch_size, cfg.eval_batch_size, seed=cfg.seed, pin_memory=on_gpu)

    callbacks: list[pl.Callback] = [SameStart(resume_from)]
    governor = apply_threads(cfg.get("threads", "auto"))
    if governor is not None:
        callbacks.append(governor)
    precise = precise_stats_batches(cfg.get("precise_stats", 0))
    if precise:
        callbacks.append(PreciseStatistics(precise, seed=cfg.seed))
    ckpt_dir = out_dir / "checkpoints"
    if resume_from is None and writer:
        _clean(out_dir)
    vocabularies = warm_start.save_vocabularies(out_dir, data) if writer else None
    callbacks.append(SelectedPredictions(out_dir / PREDICTIONS_NAME))
    checkpoint = SelectedCheckpoint(ckpt_dir) if cfg.checkpoint else None
    if checkpoint is not None:
        callbacks.append(checkpoint)
    if trainer_args.get("enable_progress_bar", True):
        callbacks.append(EpochProgressBar(leave=True))
    pruning = trial_pruning(cfg)  # a job of an Optuna sweep: per-epoch reports to its trial, may stop early
    if pruning is not None:
        callbacks.append(pruning)
    # ctrbench's own checkpoint (above) is the only one: Lightning's default would save another epoch
    trainer_args["enable_checkpointing"] = False
    # the data module splits every global batch across the ranks itself (RankBatches)
    trainer_args["use_distributed_sampler"] = False
    logger = make_logger(_options(cfg.logger), out_dir) if writer else False
    if logger and task.optim.scheduler.active:  # the rate of every step, in the loggers
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    trainer = pl.Trainer(
        **trainer_args,
        callbacks=callbacks,
        logger=logger,
        default_root_dir=str(out_dir),
    )
    refused = launcher_refusal(trainer, cfg.trainer.get("strategy")) or sparse_refusal(
        len(sparse_tables), trainer.world_size, process_group_backend(trainer)
    )
    if refused:
        raise ValueError(refused)
    if len(data.val) == 0:
        log.warning("the validation split is empty: the last epoch is reported and its weights kept")
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*sync_dist.*")
        warnings.filterwarnings("ignore", message=".*treespec, LeafSpec.*")
        warnings.filterwarnings("ignore", message=".*Total length of `DataLoader` across ranks is zero.*")
        # the processes Lightning starts for this job resume from what rank 0 chose
        os.environ[RESUME_ENV] = str(resume_from or "")
        try:
            trainer.fit(
                task,
                datamodule=dm,
                ckpt_path=str(resume_from) if resume_from else None,
                weights_only=True,  # a checkpoint is read as data (architecture §8)
            )
        finally:
            os.environ.pop(RESUME_ENV, None)
    wall = time.perf_counter() - started
    distributed = describe(trainer, cfg.batch_size)
    if not task.history:
        raise RuntimeError("no validation epoch ran (check trainer.max_epochs / trainer.limit_val_batches)")
    if not trainer.is_global_zero:
        return {"epochs": task.history, "distributed": distributed}
    val_best, selected_by = select_epoch(task.history, SELECT)
    test_best, _ = select_epoch(task.history, "test_gauc")
    if selected_by == LAST_EPOCH and len(data.val):
        log.warning("validation %s undefined in every epoch: the last epoch is reported and kept", SELECT)
    predictions = out_dir / PREDICTIONS_NAME
    if predictions.is_file() and predictions_epoch(predictions) != int(val_best["epoch"]):
        raise CheckpointError(f"{predictions} does not hold the reported epoch {int(val_best['epoch']) + 1}")
    if checkpoint is not None:
        verify_checkpoint(checkpoint.path, int(val_best["epoch"]))
        checkpoint.last.unlink(missing_ok=True)  # finished: best.ckpt is the run's model
    return {
        "epochs": task.history,
        "best_epoch": val_best["epoch"],
        "selected_by": selected_by,
        "best_val_gauc": val_best.get("val_gauc"),
        **{f"test_{m}": val_best.get(f"test_{m}") for m in METRICS},
        "test_selected": {
            "epoch": test_best["epoch"],
            **{f"test_{m}": test_best.get(f"test_{m}") for m in METRICS},
        },
        "checkpoint": str(checkpoint.path) if checkpoint is not None else None,
        "predictions": PREDICTIONS_NAME if (out_dir / PREDICTIONS_NAME).is_file() else None,
        "train_time_s": wall,
        "train_loop_s": task.train_seconds,
        "eval_s": task.eval_seconds,
        "samples_per_s": task.train_samples / task.train_seconds if task.train_seconds else None,
        "threads": governor.summary() if governor is not None else {"most": torch.get_num_threads()},
        "dataset_stats": data.info,
        "sparse_tables": len(sparse_tables),
        "distributed": distributed,
        "vocabularies": vocabularies,
        **({"init_from": started_from} if started_from is not None else {}),
        **({"optuna": pruning.summary()} if pruning is not None else {}),
    }


def _plugins(cfg: DictConfig) -> dict[str, dict[str, str]]:
    out = {}
    for kind in registry.KINDS:
        name = cfg[kind].name
        try:
            out[kind] = registry.get(kind, name).describe()
        except registry.PluginError:
            out[kind] = {"name": name, "dist": "?", "version": "?"}
    return out


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _plugin_specs(cfg: DictConfig) -> list[registry.PluginSpec]:
    specs = []
    for kind in registry.KINDS:
        try:
            specs.append(registry.get(kind, cfg[kind].name))
        except registry.PluginError:
            pass  # an unknown name fails the job when it is built, with its own message
    return specs


def new_record(
    cfg: DictConfig,
    overrides: Sequence[str] = (),
    job_num: int | None = None,
    choices: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A job's record before it runs (status ``running``)."""
    return {
        "status": "running",
        "error": None,
        # the option the user chose (a thin variant such as din_official names the plugin it configures)
        **{kind: (choices or {}).get(kind) or cfg[kind].name for kind in registry.KINDS},
        "seed": cfg.seed,
        "job_num": job_num,
        "overrides": list(overrides),
        "config": _config(cfg),
        "plugins": _plugins(cfg),
        "placement": placement(),
        "started_at": _now(),
    }


def _config(cfg: DictConfig) -> Any:
    """The resolved config; unresolved where an interpolation cannot resolve (the job then fails)."""
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # e.g. ${oc.env:UNSET}: the record still says what was asked for
        return OmegaConf.to_container(cfg, resolve=False)


def _save(out_dir: Path, record: dict[str, Any]) -> dict[str, Any]:
    """Write the record; a record that cannot be written (a full disk, a read-only folder) fails the job
    in one line, and the previous ``result.json`` stays as it was (the write is atomic)."""
    try:
        write_result(out_dir, record)
    except OSError as exc:
        record = {
            **record,
            "status": "failed",
            "error": f"record not written to {out_dir}: {error_line(exc)}",
        }
        log.error("job failed: %s", record["error"])
    return record


def record_failure(
    cfg: DictConfig,
    out_dir: Path,
    exc: BaseException,
    overrides: Sequence[str] = (),
    job_num: int | None = None,
    choices: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Record a job that failed before it could start (e.g. no free GPU slot) as ``failed``, one line."""
    record = new_record(cfg, overrides, job_num, choices)
    record.update(status="failed", error=error_line(exc), finished_at=_now())
    log.error("job failed: %s", record["error"])
    return _save(out_dir, record)


def _rank_resume(cfg: DictConfig, out_dir: Path, fingerprint: dict[str, Any]) -> Path | None:
    """What a rank other than 0 resumes from: rank 0's choice when Lightning started this process for
    it (:data:`RESUME_ENV`), else the same rule rank 0 applies to the shared job folder."""
    if RESUME_ENV in os.environ:
        chosen = os.environ[RESUME_ENV]
        return Path(chosen) if chosen else None
    return resumable(out_dir, cfg, fingerprint) if cfg.get("resume", False) else None


def run_rank(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """A rank other than 0 of a multi-process job: trains its share and writes nothing (rank 0 writes
    the record, checkpoints and predictions). Returns a record that is not saved: ``ok`` with the
    history (``skipped`` when the folder holds a finished run: rank 0 skips it too), or ``failed``
    with the one-line error (the command then exits non-zero, so the launcher sees it)."""
    record: dict[str, Any] = {"status": "ok", "error": None, "rank": launch_rank()}
    try:
        current = _fingerprint(cfg, load_data(cfg), out_dir)
        if RESUME_ENV not in os.environ and cfg.get("resume", False):
            previous, _ = finished_record(out_dir, cfg, current)
            if previous is not None:
                return {**record, "skipped": True}
        record.update(train(cfg, out_dir, resume_from=_rank_resume(cfg, out_dir, current)))
    except (JobInterrupted, SystemExit):
        raise
    except Exception as exc:
        record.update(status="failed", error=f"rank {record['rank']}: {error_line(exc)}")
        log.error("job failed: %s", record["error"])
    finally:
        finish(failed=record["status"] == "failed")
    return record


def run(
    cfg: DictConfig,
    out_dir: Path,
    overrides: Sequence[str] = (),
    job_num: int | None = None,
    choices: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Train and write ``result.json`` in ``out_dir`` — with status ``failed`` when anything raises
    (``pruned`` when an Optuna sweep's pruner stopped it).

    A failure is logged as one line and recorded; it never propagates, so a sweep goes on. While the
    job trains its record says ``running``; SIGTERM or SIGINT (:mod:`ctrbench.engine.interrupt`)
    records it ``interrupted``, with the epochs it finished, and propagates. With ``resume``
    (default) a job whose folder already holds an ``ok`` record of the identical resolved config,
    data, code and device (:func:`finished_record`) is skipped and that record returned, so
    re-running a sweep into the same ``hydra.sweep.dir`` re-runs only failed, interrupted, missing
    or outdated jobs.

    In a job of several processes, ranks other than 0 train through :func:`run_rank` and write nothing.
    """
    if launch_rank() != 0:
        return run_rank(cfg, out_dir)
    if warm_start.own_folder(cfg.get("init_from"), out_dir):  # its record would replace the old run's
        record = new_record(cfg, overrides, job_num, choices)
        record.update(status="failed", finished_at=_now())
        record["error"] = (
            f"init_from={cfg.init_from} is this job's own folder: write the warm-started run to another one"
        )
        log.error("job failed: %s (nothing written)", record["error"])
        return record
    out_dir.mkdir(parents=True, exist_ok=True)
    record = new_record(cfg, overrides, job_num, choices)
    progress: dict[str, Any] = {}
    try:
        on_gpu = _on_gpu(cfg)
        fixed = thread_setting(cfg.get("threads", "auto"))  # a bad value is the job's one-line error
        if fixed is not None:
            torch.set_num_threads(fixed)  # before the provenance records the count
        source = warm_start.source(cfg.get("init_from"), out_dir)
        record["fingerprint"] = _fingerprint(cfg, load_data(cfg), out_dir, source)
        record["provenance"] = provenance(on_gpu)
        if source is not None:
            record["init_from"] = source.summary()
        resume_from = None
        if cfg.get("resume", False):
            previous, why = finished_record(out_dir, cfg, record["fingerprint"])
            if previous is not None:
                log.info("skipped: %s already holds an ok result.json of this config, data and code", out_dir)
                return previous
            if why and why != "no result.json":
                log.info("running %s again: %s", out_dir, why)
            resume_from = resumable(out_dir, cfg, record["fingerprint"])
            if resume_from is not None:
                record["resumed_from"] = str(resume_from)
        if resume_from is None:  # before the record: another rank reading the folder sees no stale file
            _clean(out_dir)
        write_result(out_dir, record)  # running: a job killed outright is not taken for finished
        record.update(train(cfg, out_dir, progress, resume_from))
        pruned = (record.get("optuna") or {}).get("pruned_epoch") is not None
        record["status"] = "pruned" if pruned else "ok"  # pruned: stopped early by its Optuna trial
        log.info(
            "done: test AUC %.4f, GAUC %.4f, logloss %.4f (epoch %d of %d, selected by %s), %.0f samples/s",
            record["test_auc"],
            record["test_gauc"],
            record["test_logloss"],
            record["best_epoch"] + 1,  # records count epochs from 0, people from 1
            len(record["epochs"]),
            "the best validation GAUC" if record["selected_by"] == SELECT else "being the last",
            record["samples_per_s"] or 0.0,
        )
    except (JobInterrupted, SystemExit) as exc:
        interrupted = exc if isinstance(exc, JobInterrupted) else interrupt.from_lightning(exc)
        if interrupted is None:
            raise
        record.update(status="interrupted", error=str(interrupted), epochs=progress.get("epochs", []))
        if "init_from" in progress:
            record["init_from"] = progress["init_from"]
        last = out_dir / "checkpoints" / LAST_NAME
        record["resume_checkpoint"] = str(last) if last.is_file() else None
        record["finished_at"] = _now()
        log.error("job %s: %d epoch(s) finished", interrupted, len(record["epochs"]))
        _save(out_dir, record)
        raise interrupted from None
    except Exception as exc:  # a job failure must not end the sweep
        record["status"] = "failed"
        record["error"] = error_line(exc)
        record["traceback"] = traceback.format_exc()
        log.error("job failed: %s", record["error"])
    finally:
        finish(failed=record["status"] not in ("ok", "pruned"))  # close this job's wandb run, if any
    record["finished_at"] = _now()
    return _save(out_dir, record)
