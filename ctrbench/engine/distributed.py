"""One job over several processes (Lightning DDP, ``torchrun``, ``srun``): ranks, batch shares, gathering.

Batch semantics: ``batch_size`` is the *global* batch. Every rank draws the same seeded permutation
(:class:`ctrbench.engine.data.IndexBatches`), so every rank walks the same global batches, and rank
``r`` of ``W`` trains on rows ``r::W`` of each (:class:`ctrbench.engine.data.RankBatches`). Its loss is
weighted by ``W · n_r / n`` (:data:`WEIGHT`), so that DDP's mean of the ranks' gradients is the
gradient of the global batch's mean loss — exactly, also for a last batch that does not split evenly;
a rank whose share of a batch is empty trains on one row of it with weight 0. A job thus sees the same
batches, and the same gradients up to float summation order, on any number of processes.

Evaluation: each rank evaluates rows ``r::W`` of every evaluation batch; the predictions (label,
logit, group, row index) of every rank are gathered (:func:`gather`), duplicates (padding rows)
dropped and ordered by row, so every rank computes AUC, GAUC and logloss over the whole split — the
same values on every rank, equal to a one-process evaluation of the same weights.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

__all__ = [
    "RESUME_ENV",
    "ROW",
    "WEIGHT",
    "all_sum",
    "describe",
    "gather",
    "launch_rank",
    "launcher_refusal",
    "process_group_backend",
    "same_everywhere",
    "sparse_refusal",
    "strip",
    "unique_rows",
    "world_size",
]

ROW = "_row"  # an evaluation batch's row indices in its split (added only on several processes)
WEIGHT = "_weight"  # a training batch's loss weight on this rank: W · local rows / global rows
META_KEYS = (ROW, WEIGHT)
# what rank 0 resumes from ("" for a fresh start), handed to the processes Lightning starts for it
RESUME_ENV = "CTRBENCH_RESUME_FROM"

# variables a launcher sets before any process group exists, in the order they are trusted
_RANK_VARIABLES = ("RANK", "SLURM_PROCID", "NODE_RANK", "GROUP_RANK", "LOCAL_RANK")


def launch_rank(env: Mapping[str, str] | None = None) -> int:
    """This process's place in a multi-process job as its launcher set it, before Lightning starts:
    torchrun's ``RANK``, Slurm's ``SLURM_PROCID`` in a step of several tasks, or — for the processes
    Lightning's own launcher starts — a positive ``NODE_RANK``/``LOCAL_RANK``; 0 for a plain command.

    Only whether it is 0 matters to ctrbench: rank 0 alone writes the job folder."""
    env = os.environ if env is None else env

    def number(name: str) -> int:
        try:
            return int(env.get(name, "0") or 0)
        except ValueError:
            return 0

    if "RANK" in env:
        return number("RANK")
    if number("SLURM_NTASKS") > 1 and "SLURM_PROCID" in env:
        return number("SLURM_PROCID")
    return max(number("NODE_RANK"), number("GROUP_RANK"), number("LOCAL_RANK"))


def world_size() -> int:
    """Processes of the initialized default process group (1 without one)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def strip(batch: Mapping[str, Any]) -> dict[str, Any]:
    """The batch without ctrbench's bookkeeping keys (what a model sees)."""
    return {k: v for k, v in batch.items() if k not in META_KEYS}


def _device(device: torch.device | None) -> torch.device:
    """Where the collective's tensors live: the job's device under NCCL, the CPU under gloo."""
    if dist.get_backend() == "nccl":
        return device if device is not None and device.type == "cuda" else torch.device("cuda")
    return torch.device("cpu")


def all_sum(values: torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
    """The element-wise sum of ``values`` over every rank (``values`` itself on one process)."""
    if world_size() == 1:
        return values
    out = values.detach().to(_device(device), torch.float64).clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out.cpu()


def gather(arrays: Sequence[torch.Tensor], device: torch.device | None = None) -> list[torch.Tensor]:
    """Every rank's 1-D tensors (equal length within a rank, any length across ranks), concatenated in
    rank order; each rank gets the same result. Lengths are gathered first, then each tensor padded to
    the longest and gathered (gloo and NCCL gather equal shapes only)."""
    if world_size() == 1:
        return [a.cpu() for a in arrays]
    where = _device(device)
    n = torch.tensor([len(arrays[0]) if arrays else 0], dtype=torch.int64, device=where)
    sizes = [torch.zeros_like(n) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, n)
    counts = [int(s) for s in sizes]
    longest = max(counts)
    out = []
    for a in arrays:
        kind = a.dtype
        a = a.to(where, torch.uint8 if kind == torch.bool else kind)  # gloo has no bool
        padded = torch.zeros(longest, dtype=a.dtype, device=where)
        padded[: len(a)] = a
        parts = [torch.empty_like(padded) for _ in counts]
        dist.all_gather(parts, padded)
        out.append(torch.cat([p[:c] for p, c in zip(parts, counts, strict=True)]).cpu().to(kind))
    return out


def same_everywhere(value: str, what: str, device: torch.device | None = None) -> None:
    """Raise, on every rank alike, a one-line ``RuntimeError`` when the ranks hold different ``value``s."""
    if world_size() == 1:
        return
    digest = int.from_bytes(hashlib.sha256(value.encode()).digest()[:7], "big")
    (seen,) = gather([torch.tensor([digest], dtype=torch.int64)], device)
    if len(set(seen.tolist())) > 1:
        differing = [rank for rank, d in enumerate(seen.tolist()) if d != seen[0]]
        raise RuntimeError(
            f"the ranks of this job disagree on {what} (rank {dist.get_rank()}: {value or 'none'}; "
            f"ranks {differing} differ from rank 0): start every rank on the same job folder "
            "(an explicit hydra.run.dir on a shared file system) with the same code and data"
        )


def unique_rows(rows: np.ndarray, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """``rows`` sorted with duplicates dropped (a padding row is a copy of a real one), and ``arrays``
    in the same order: the gathered predictions of a split, in the split's row order."""
    kept, first = np.unique(rows, return_index=True)
    return (kept, *(a[first] for a in arrays))


def process_group_backend(trainer: Any) -> str | None:
    """The backend the trainer's strategy uses (or will, once launched) to join its processes; None for
    a single-process strategy. Lightning picks NCCL for CUDA devices and gloo for the CPU."""
    strategy = getattr(trainer, "strategy", None)
    if strategy is None or not hasattr(strategy, "process_group_backend"):
        return None
    chosen = strategy.process_group_backend
    if chosen is None:
        from lightning_fabric.utilities.distributed import _get_default_process_group_backend_for_device

        chosen = _get_default_process_group_backend_for_device(strategy.root_device)
    return chosen


def launcher_refusal(trainer: Any, strategy: Any) -> str | None:
    """Why ``trainer.strategy`` cannot train a ctrbench job (None when it can): ``ddp_spawn``,
    ``ddp_fork`` and ``ddp_notebook`` train in worker processes that hand back only rank 0's weights,
    so the job's per-epoch history (what its record reports) would never reach it."""
    from pytorch_lightning.strategies.launchers import _MultiProcessingLauncher

    if isinstance(getattr(trainer.strategy, "launcher", None), _MultiProcessingLauncher):
        return (
            f"trainer.strategy={strategy} trains in worker processes whose per-epoch results never reach "
            "the job's record: use trainer.strategy=ddp (one process per device, rank 0 writes the record)"
        )
    return None


def sparse_refusal(n_tables: int, processes: int, backend: str | None) -> str | None:
    """Why sparse embedding gradients cannot train on ``processes`` processes (None when they can):
    DDP all-reduces sparse gradients on gloo only (NCCL has no sparse all-reduce)."""
    if n_tables == 0 or processes <= 1 or backend in (None, "gloo"):
        return None
    return (
        f"{n_tables} embedding table(s) have sparse gradients (optim.sparse), which DDP cannot all-reduce "
        f"on the {backend} backend of a {processes}-process job: set optim.sparse=false, or train on gloo "
        "(trainer.accelerator=cpu)"
    )


def describe(trainer: Any, batch_size: int) -> dict[str, Any]:
    """The ``distributed`` part of a record: how many processes trained the job and how they split it."""
    world = int(getattr(trainer, "world_size", 1) or 1)
    strategy = getattr(trainer, "strategy", None)
    environment = getattr(strategy, "cluster_environment", None)
    return {
        "world_size": world,
        "num_nodes": int(getattr(trainer, "num_nodes", 1) or 1),
        "processes_per_node": int(getattr(strategy, "num_processes", 1) or 1) if world > 1 else 1,
        "strategy": type(strategy).__name__ if strategy is not None else None,
        "backend": process_group_backend(trainer) if world > 1 else None,
        "cluster_environment": type(environment).__name__ if world > 1 and environment is not None else None,
        "global_batch_size": batch_size,
        "rank_batch_size": -(-batch_size // world),  # at most; rows r::W of each global batch
    }
