"""Launching jobs: the ``hydra/launcher=gpus`` preset's per-process GPU slot, and refusals before launch.

Presets (``conf/hydra/launcher/``):

* ``gpus`` — the joblib launcher (local loky worker processes); each worker claims one GPU for its
  whole life (:mod:`ctrbench.launcher.gpu_slots`: one machine-wide slot folder, a GPU listed twice
  refused, a worker whose launching process is gone exits); ``n_jobs`` defaults to the number of GPUs,
  or on a machine without GPUs to ``cores // 4`` CPU jobs with ``cores // n_jobs`` torch threads each;
* ``slurm`` — ctrbench's :class:`~ctrbench.launcher.slurm_launcher.SlurmLauncher` on
  hydra-submitit-launcher's ``submitit_slurm`` config: each job its own Slurm job (a job array per
  batch) with one GPU (Slurm sets its ``CUDA_VISIBLE_DEVICES``), 4 CPUs, 32 GB, 120 minutes; ``slurm_cpu``
  the same without a GPU. A job cancelled or killed (``scancel``: SIGTERM, the job records itself
  ``interrupted``; cancelled before it started: the launcher records it) is that job's row and the sweep
  goes on to its summary; job states come from ``sacct``, or ``squeue`` on a cluster without slurmdbd.
  Run on a single-node Slurm 22.05 (``scripts/local-slurm``) with two fake GPUs as generic resources;
* ``ray_gpus`` — ctrbench's :class:`~ctrbench.launcher.ray_launcher.RayLauncher` on hydra-ray-launcher's
  ``ray`` config: each job one Ray task with ``remote.num_gpus: 1`` (Ray sets its ``CUDA_VISIBLE_DEVICES``;
  a fresh worker process per GPU task) and ``floor(remote.num_cpus)`` torch threads, on a cluster
  (``ray.init.address=auto``) or on a Ray it starts here; workers get this process's ``PYTHONPATH``,
  ``CTRBENCH_*`` and ``WANDB_*``; a task whose worker dies is recorded ``interrupted`` and the sweep goes on
  to its summary; a Ray started here without the GPUs asked for (:mod:`ctrbench.launcher.ray_checks`), a
  cluster no node of which could run one job, or workers that cannot import ctrbench: refused in one line.

The CLI calls :func:`check_args` before Hydra composes and :func:`prepare_job` first thing in every job.
Importing this package registers the OmegaConf resolver ``${ctrbench.n_jobs:}`` the ``gpus`` preset uses.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from omegaconf import OmegaConf

from ctrbench.launcher.checks import LaunchError, check_args, multi_device_reason, refusal
from ctrbench.launcher.gpu_slots import (
    Slot,
    claim_gpu,
    cpu_count,
    default_n_jobs,
    detect_gpus,
    held_slot,
    threads_per_job,
)

__all__ = ["LaunchError", "check_args", "default_jobs", "held_slot", "prepare_job", "register_resolvers"]

log = logging.getLogger("ctrbench")
_threads_set: int | None = None  # torch threads this process was given (once per process)


def default_jobs() -> int:
    """``${ctrbench.n_jobs:}``: one job per GPU, else ``cores // 4`` CPU jobs (see ``gpu_slots``)."""
    return default_n_jobs(len(detect_gpus()), cpu_count())


def register_resolvers() -> None:
    """Register ``${ctrbench.n_jobs:}`` (idempotent; Hydra ships resolvers to launcher workers)."""
    OmegaConf.register_new_resolver("ctrbench.n_jobs", default_jobs, replace=True)


def _trainer_reason(trainer: Any, n_gpus: int) -> str | None:
    get = trainer.get if hasattr(trainer, "get") else (lambda key, default=None: default)
    return multi_device_reason(
        devices=get("devices", 1),
        strategy=get("strategy", None),
        num_nodes=get("num_nodes", 1),
        accelerator=get("accelerator", "auto"),
        n_gpus=n_gpus,
    )


def prepare_job(cfg: Any, hydra_cfg: Any) -> Slot | None:
    """First thing in every job (``_task``): refuse multi-device sweeps; under ``gpus``, claim the GPU.

    * Under a multirun, a trainer that would train on several devices or processes raises
      :class:`LaunchError` (the command-line check catches the same from overrides before launch;
      this one catches it from config files).
    * Under ``hydra/launcher=gpus`` (also for a single run, so that it never shares a GPU with a sweep):
      claim this process's GPU slot and set ``CUDA_VISIBLE_DEVICES`` (before anything touches CUDA), and
      give torch ``OMP_NUM_THREADS`` threads (set by joblib's loky for its workers to ``cores // n_jobs``),
      else ``cores // n_jobs``. In a worker process (loky), also start the watch that ends the worker
      once the sweep's process is gone (:func:`gpu_slots.watch_parent`), with or without a GPU. Other
      launchers are left alone. Returns the slot held, if any.
    """
    from hydra.types import RunMode

    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    gpus_launcher = hydra_cfg.runtime.choices.get("hydra/launcher") == "gpus"
    if multirun:
        n_gpus = len(detect_gpus())
        reason = _trainer_reason(cfg.get("trainer", {}), min(n_gpus, 1) if gpus_launcher else n_gpus)
        if reason:
            raise LaunchError(refusal(reason))
    if not gpus_launcher:
        return None
    slot = claim_gpu()
    threads = _set_threads(int(hydra_cfg.launcher.get("n_jobs", 1)) if multirun else 1)
    where = f"GPU {slot.gpu} (lock {slot.path})" if slot else "CPU"
    log.info("worker pid %d: %s, %d torch threads", os.getpid(), where, threads)
    return slot


def _set_threads(n_jobs: int) -> int:
    """Torch threads for this process: ``OMP_NUM_THREADS`` if set, else ``cores // n_jobs``."""
    global _threads_set
    omp = os.environ.get("OMP_NUM_THREADS", "")
    threads = int(omp) if omp.isdigit() and int(omp) > 0 else threads_per_job(cpu_count(), n_jobs)
    if _threads_set != threads:
        import torch

        torch.set_num_threads(threads)
        _threads_set = threads
    return threads


register_resolvers()
