"""Where a job ran: host, process, visible devices, and the scheduler's own ids for it.

A record's ``placement`` lets a reader (and the cluster tests) check that every job of a sweep ran
where its launcher said: its own ``CUDA_VISIBLE_DEVICES``, its own Slurm job, its own Ray task, its
rank in a multi-process job.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

SLURM_VARIABLES = {
    "job_id": "SLURM_JOB_ID",
    "array_job_id": "SLURM_ARRAY_JOB_ID",
    "array_task_id": "SLURM_ARRAY_TASK_ID",
    "step_id": "SLURM_STEP_ID",
    "node": "SLURMD_NODENAME",
    "procid": "SLURM_PROCID",
}
DISTRIBUTED_VARIABLES = {
    "rank": "RANK",
    "local_rank": "LOCAL_RANK",
    "world_size": "WORLD_SIZE",
    "node_rank": "GROUP_RANK",
}


def _present(variables: dict[str, str]) -> dict[str, str] | None:
    found = {key: os.environ[name] for key, name in variables.items() if name in os.environ}
    return found or None


def _ray() -> dict[str, str] | None:
    """The Ray task running this job, when this process is a Ray worker (never imports Ray itself)."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None
    context = ray.get_runtime_context()
    return {
        "task_id": context.get_task_id(),
        "node_id": context.get_node_id(),
        "job_id": context.get_job_id(),
        "worker_mode": str(context.worker.mode),
        "gpu_ids": [str(i) for i in ray.get_gpu_ids()],
    }


def placement() -> dict[str, Any]:
    """``{host, pid, cuda_visible_devices, slurm, ray, distributed}``; absent schedulers are None."""
    return {
        "host": platform.node(),
        "pid": os.getpid(),
        # None: unset (every device visible); "": none visible
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "slurm": _present(SLURM_VARIABLES),
        "ray": _ray(),
        "distributed": _present(DISTRIBUTED_VARIABLES),
    }
