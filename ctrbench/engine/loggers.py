"""Lightning loggers by config name: ``logger=csv`` (default), ``tensorboard``, ``wandb``, ``none``.

``make_logger(options, out_dir)`` builds the logger of one job from its ``cfg.logger`` options;
``finish(logger, failed=...)`` must run at the end of every job (in a ``finally``), so that each job
closes its own experiment-tracker run: Lightning's ``WandbLogger`` never calls ``wandb.finish()`` and
reuses an open ``wandb.run``, so without it the next job of the process would log into the same run.

wandb runs of a sweep are grouped: ``group`` = the sweep directory (one group per sweep),
``job_type`` = the model option, run name = the job's override string (``hydra.job.override_dirname``).
``WANDB_MODE=offline`` (or ``logger.mode=offline``) needs no network; ``wandb sync`` uploads later.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import CSVLogger, Logger

__all__ = ["LOGGERS", "finish", "hydra_defaults", "make_logger"]

log = logging.getLogger("ctrbench")
AUTO = "auto"
WANDB_GROUP_MAX = 128  # wandb's limit on group names


def _csv(options: dict[str, Any], out_dir: Path) -> Logger:
    return CSVLogger(save_dir=str(out_dir), name=options.get("subdir", "csv"), version="")


def _tensorboard(options: dict[str, Any], out_dir: Path) -> Logger:
    """TensorBoardLogger writing ``<job dir>/<subdir>/events.out.tfevents.*``."""
    if importlib.util.find_spec("tensorboard") is None and importlib.util.find_spec("tensorboardX") is None:
        raise ImportError("logger=tensorboard needs `pip install tensorboard` (or tensorboardX)")
    from pytorch_lightning.loggers import TensorBoardLogger

    return TensorBoardLogger(
        save_dir=str(out_dir),
        name=options.get("subdir", "tensorboard"),
        version="",
        default_hp_metric=False,
    )


def _short_group(sweep_dir: str) -> str:
    """The sweep directory as a wandb group: relative to the working directory when inside it."""
    path = Path(sweep_dir)
    try:
        text = str(path.resolve().relative_to(Path.cwd().resolve())) if path.is_absolute() else str(path)
    except ValueError:
        text = str(path)
    return text[-WANDB_GROUP_MAX:]


def hydra_defaults() -> dict[str, Any]:
    """What ``auto`` means inside a Hydra job: group, job_type, run name and run config.

    group: the sweep directory in a multirun, none for a single run; job_type: the model option
    (``din_official`` for a thin variant); name: ``hydra.job.override_dirname``; config: the chosen
    options and the job's overrides. Empty outside a Hydra job (the Python API).
    """
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if not HydraConfig.initialized():
            return {}
        hc = HydraConfig.get()
    except Exception:  # no Hydra job here
        return {}
    choices = {k: v for k, v in hc.runtime.choices.items() if not k.startswith("hydra/") and v is not None}
    return {
        "group": _short_group(str(hc.sweep.dir)) if hc.mode == RunMode.MULTIRUN else None,
        "job_type": choices.get("model"),
        "run_name": hc.job.override_dirname or None,
        "config": {**choices, "overrides": list(hc.overrides.task)},
    }


def _wandb(options: dict[str, Any], out_dir: Path) -> Logger:
    """WandbLogger for one job: its own run (a run left open by an earlier job is finished first)."""
    if importlib.util.find_spec("wandb") is None:
        raise ImportError("logger=wandb needs `pip install wandb`")
    import wandb
    from pytorch_lightning.loggers import WandbLogger

    if wandb.run is not None:  # an earlier job of this process did not finish its run: never log into it
        finish()
    auto = hydra_defaults()

    def pick(key: str) -> Any:
        value = options.get(key, AUTO)
        return auto.get(key) if value == AUTO else value

    init: dict[str, Any] = {
        "entity": options.get("entity"),
        "group": pick("group"),
        "job_type": pick("job_type"),
        "tags": list(options.get("tags") or []) or None,
        "notes": options.get("notes"),
        "config": auto.get("config"),
    }
    if options.get("mode"):  # else wandb's own choice: WANDB_MODE, then online
        init["mode"] = options["mode"]
    save_dir = options.get("dir") or os.environ.get("WANDB_DIR") or str(out_dir)
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    return WandbLogger(
        name=pick("run_name"),
        save_dir=save_dir,
        project=options.get("project") or "ctrbench",
        log_model=options.get("log_model", False),
        **{k: v for k, v in init.items() if v is not None},
    )


LOGGERS: dict[str, Callable[[dict[str, Any], Path], Logger | bool]] = {
    "csv": _csv,
    "tensorboard": _tensorboard,
    "wandb": _wandb,
    "none": lambda options, out_dir: False,
}


def make_logger(options: dict[str, Any], out_dir: Path) -> Logger | bool:
    """The Lightning logger ``options["name"]`` names (``False``: no logging), writing under ``out_dir``."""
    name = options.get("name", "csv")
    if name not in LOGGERS:
        raise ValueError(f"unknown logger {name!r} (choices: {', '.join(LOGGERS)})")
    return LOGGERS[name](options, out_dir)


def finish(logger: Logger | bool | None = None, failed: bool = False) -> None:
    """End the job's experiment-tracker run; call it in a ``finally`` at the end of every job.

    With a ``WandbLogger``, finishes its run; without one (``None``), finishes whatever wandb run this
    process has open. ``failed`` marks the run failed (exit code 1). A no-op when wandb was never
    imported; never raises (a tracker problem must not hide the job's own error).
    """
    wandb = sys.modules.get("wandb")
    if wandb is None:
        return
    try:
        if logger:
            from pytorch_lightning.loggers import WandbLogger

            if not isinstance(logger, WandbLogger):
                return  # csv, tensorboard: nothing stays open between jobs
            run = logger._experiment  # None: this logger never started a run
        else:
            run = getattr(wandb, "run", None)
        if run is not None:
            run.finish(exit_code=1 if failed else 0)
    except Exception as exc:
        log.warning("wandb run not finished cleanly: %s: %s", type(exc).__name__, exc)
