"""``hydra/launcher=ray_gpus``: every job of a sweep is one Ray task, on a cluster or on this machine.

:class:`RayLauncher` is hydra-ray-launcher's ``ray`` launcher (same options: ``ray.init`` goes to
``ray.init``, ``ray.remote`` to ``ray.remote``) with what a sweep of ctrbench needs on top:

* **Connecting.** ``object_store_memory`` (which the plugin always adds, and which ``ray.init`` refuses
  when it joins a running cluster) only when Ray is started here (``ray.init.address: null``). A cluster
  that cannot be reached, or that no node of could run one job (``remote.num_gpus`` GPUs, ``num_cpus``
  CPUs, ``memory``, custom ``resources``: Ray would keep such tasks pending for ever), stops the command
  with one line before any job is submitted (:class:`SystemExit`).
* **The workers' environment.** ``PYTHONPATH``, ``WANDB_*``, ``CTRBENCH_*`` (but not the ``gpus``
  preset's slot variables) and the command line ctrbench records are handed to the workers through
  the job's ``runtime_env`` (``env_vars``; entries the user put in ``ray.init.runtime_env`` win), so
  that a worker of a cluster started from another shell imports the same plugins. A first tiny task
  checks that a worker imports ctrbench, and stops the command in one line when it does not (a cluster
  started from another Python than the one running the sweep); a worker under another Python
  installation that still imports ctrbench is logged as a warning.
* **Paths.** The sweep folder is made absolute here: a Ray worker's working directory is not this one.
* **Threads.** A task runs its job with ``floor(remote.num_cpus)`` torch threads (1 when unset) and
  ``OMP_NUM_THREADS`` set to the same, whatever the environment the cluster was started from.
* **Lost tasks.** A job's own failure is already a ``failed`` record (:func:`ctrbench.engine.job.run`
  never raises for it). A task lost outside the job -- its worker process died (``kill -9``, Ray's
  memory monitor, a node lost) or it was cancelled -- is recorded ``interrupted`` with the reason (so
  that a re-run continues it from its last checkpoint); a task that could not even start (it raised
  before the job began, e.g. a worker that cannot unpickle it) is recorded ``failed``. Every other
  job's record stays, and the sweep goes on to its summary. A job interrupted inside its worker
  (SIGTERM/SIGINT of that worker) records itself ``interrupted`` and the sweep goes on.
* **Interrupting the sweep** (Ctrl-C / SIGTERM of the ``ctrbench`` process): the tasks still pending
  or running are cancelled (a running job gets ``KeyboardInterrupt``), given
  :data:`CANCEL_WAIT_S` seconds to record themselves, and the interrupt goes on to the sweeper, which
  writes the summary of what finished.

Ray reserves ``remote.num_gpus`` GPUs per task and sets ``CUDA_VISIBLE_DEVICES`` to them; a task that
asks for a GPU gets a fresh worker process (Ray's ``max_calls=1`` for GPU tasks), so a job never
inherits a CUDA context made for another GPU.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
from hydra.types import HydraContext, TaskFunction
from hydra_plugins.hydra_ray_launcher.ray_launcher import RayLauncher as HydraRayLauncher
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

__all__ = [
    "CANCEL_WAIT_S",
    "RayLauncher",
    "forwarded_env",
    "resource_problem",
    "run_job_in_ray",
    "task_threads",
]

log = logging.getLogger("ctrbench")
CANCEL_WAIT_S = 10.0  # an interrupted sweep waits this long for its cancelled tasks to record themselves
OBJECT_STORE_BYTES = 78_643_200  # hydra-ray-launcher's default for a Ray started by the launcher (75 MiB)
FORWARDED_PREFIXES = ("CTRBENCH_", "WANDB_")
FORWARDED_NAMES = ("PYTHONPATH", "HYDRA_FULL_ERROR", "PYTHONWARNINGS")
NOT_FORWARDED = ("CTRBENCH_GPUS", "CTRBENCH_GPU_SLOT")  # the gpus preset's per-process GPU claim
# remote option -> (resource name in Ray's node table, how to print it)
RESOURCE_OPTIONS = {"num_gpus": ("GPU", "GPU"), "num_cpus": ("CPU", "CPU"), "memory": ("memory", "bytes")}


def forwarded_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables of ``env`` (default ``os.environ``) a Ray worker needs to run jobs as this process
    would: ``PYTHONPATH`` (plugins outside the environment), ``CTRBENCH_*`` (the recorded command line,
    cache and slot settings; not the ``gpus`` preset's own GPU claim), ``WANDB_*``."""
    env = os.environ if env is None else env
    return {
        name: value
        for name, value in env.items()
        if (name in FORWARDED_NAMES or name.startswith(FORWARDED_PREFIXES)) and name not in NOT_FORWARDED
    }


def task_threads(remote: Mapping[str, Any]) -> int:
    """Torch threads of one task: ``floor(remote.num_cpus)``, at least 1 (1 when unset: Ray's own
    default reserves one CPU per task)."""
    cpus = remote.get("num_cpus")
    try:
        return max(1, math.floor(float(cpus))) if cpus is not None else 1
    except (TypeError, ValueError):
        return 1


def _fmt(value: float, unit: str) -> str:
    number = f"{value:g}" if unit != "bytes" else f"{value / 2**30:.1f} GiB"
    return f"{number} {unit}" if unit != "bytes" else number


def resource_problem(remote: Mapping[str, Any], nodes: Sequence[Mapping[str, Any]], where: str) -> str | None:
    """One line when no alive node in ``nodes`` (``ray.nodes()``) has everything one task asks for
    (``remote``: ``num_gpus``, ``num_cpus``, ``memory``, ``resources``), else None."""
    asked: dict[str, tuple[float, str, str]] = {}  # resource -> (amount, option, unit)
    for option, (resource, unit) in RESOURCE_OPTIONS.items():
        if remote.get(option):
            asked[resource] = (float(remote[option]), f"hydra.launcher.ray.remote.{option}", unit)
    for resource, amount in dict(remote.get("resources") or {}).items():
        if amount:
            asked[str(resource)] = (float(amount), f"hydra.launcher.ray.remote.resources.{resource}", "")
    if not asked:
        return None
    alive = [dict(node.get("Resources") or {}) for node in nodes if node.get("Alive", True)]
    if any(all(res.get(name, 0.0) >= amount for name, (amount, _, _) in asked.items()) for res in alive):
        return None

    def most(name: str) -> float:
        return max((res.get(name, 0.0) for res in alive), default=0.0)

    short = [name for name, (amount, _, _) in asked.items() if most(name) < amount]
    apart = not short  # each resource exists somewhere, never all of them on one node
    shown = list(asked) if apart else short
    wants = ", ".join(f"{asked[name][1]}={asked[name][0]:g}" for name in shown)
    has = ", ".join(_fmt(most(name), asked[name][2] or name) for name in shown)
    largest = "no single node has all of them (the most on any node" if apart else "the largest node has"
    hint = (
        "; set hydra.launcher.ray.remote.num_gpus=0 for CPU jobs, or declare GPUs of a Ray started here "
        "with hydra.launcher.ray.init.num_gpus=N"
        if "GPU" in shown
        else ""
    )
    return (
        f"no node of the Ray cluster ({where}) has what one job asks for ({wants}; {largest}: {has}"
        f"{')' if apart else ''}): Ray would keep the jobs waiting for ever{hint}"
    )


# ---- in the Ray worker -------------------------------------------------------------------------------
def _set_threads(threads: int) -> None:
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)


def run_job_in_ray(
    hydra_context: HydraContext,
    sweep_config: DictConfig,
    task_function: TaskFunction,
    singleton_state: dict[Any, Any],
    threads: int,
) -> JobReturn:
    """The Ray task: one job through Hydra's ``run_job`` (as hydra-ray-launcher does), with
    ``threads`` torch threads. A job interrupted here (SIGTERM/SIGINT of this worker) has recorded
    itself ``interrupted``; its task returns like a finished one, so that the sweep goes on."""
    from hydra_plugins.hydra_ray_launcher._launcher_util import _run_job

    from ctrbench.engine.interrupt import JobInterrupted

    _set_threads(threads)
    try:
        return _run_job(hydra_context, sweep_config, task_function, singleton_state)
    except (JobInterrupted, KeyboardInterrupt) as exc:
        log.error("job in %s interrupted: %s", sweep_config.hydra.runtime.output_dir, exc)
        return _settled_return(sweep_config)


def _probe() -> dict[str, str]:
    """What a worker runs: its Python, and whether (and which) ctrbench it imports."""
    info = {"python": sys.executable, "prefix": sys.prefix, "pid": str(os.getpid())}
    try:
        from importlib import metadata

        import ctrbench  # noqa: F401

        info["ctrbench"] = metadata.version("ctrbench")
    except Exception as exc:  # reported by the driver in one line
        info["error"] = f"{type(exc).__name__}: {exc}"
    return info


# ---- in the launching process ------------------------------------------------------------------------
def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _settled_return(sweep_config: DictConfig) -> JobReturn:
    """The return of a job whose record says how it ended (a job fails by its record, never by raising:
    Hydra's sweeper would stop the whole sweep on a failed return)."""
    ret = JobReturn()
    ret.overrides = list(OmegaConf.to_container(sweep_config.hydra.overrides.task))  # type: ignore[arg-type]
    ret.hydra_cfg = OmegaConf.create({"hydra": OmegaConf.to_container(sweep_config.hydra, resolve=False)})
    ret.working_dir = os.getcwd()
    ret.task_name = str(sweep_config.hydra.job.name)
    ret.status = JobStatus.COMPLETED
    ret._return_value = float("nan")
    return ret


def _lost_status(exc: BaseException) -> str:
    """``failed`` for a task that raised before its job began; ``interrupted`` for one ended from
    outside (worker or node died, out of memory, cancelled): its re-run continues from ``last.ckpt``."""
    import ray.exceptions

    return "failed" if isinstance(exc, ray.exceptions.RayTaskError) else "interrupted"


def _lost_reason(exc: BaseException) -> str:
    import ray.exceptions

    if isinstance(exc, ray.exceptions.RayTaskError):
        cause = exc.cause if isinstance(getattr(exc, "cause", None), BaseException) else None
        text = f"{type(cause).__name__}: {cause}" if cause is not None else str(exc)
        lines = [line for line in text.strip().splitlines() if line.strip()]
        return f"its Ray task raised before the job began: {lines[-1] if lines else type(exc).__name__}"
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return f"its Ray task was lost ({type(exc).__name__}): {lines[0] if lines else ''}".rstrip(": ")


def record_lost(sweep_config: DictConfig, out_dir: Path, exc: BaseException) -> dict[str, Any]:
    """Write the record of a job whose Ray task was lost (see :func:`_lost_status`): the job's own
    ``running`` record (or none, when it never began) becomes ``failed``/``interrupted`` with the reason;
    a record the job finished is kept as it is. Returns the record in ``out_dir``."""
    from ctrbench.results.record import read_result, write_result

    status, reason = _lost_status(exc), _lost_reason(exc)
    previous = read_result(out_dir)
    if previous is not None and previous.get("status") != "running":
        return previous  # the job wrote its own end before its worker went
    if previous is None:
        from ctrbench.engine.job import new_record  # imports torch: only for a task that never began

        task_cfg = OmegaConf.masked_copy(sweep_config, [k for k in sweep_config if k != "hydra"])
        choices = dict(sweep_config.hydra.runtime.choices or {})
        previous = new_record(
            task_cfg,  # type: ignore[arg-type]
            list(OmegaConf.to_container(sweep_config.hydra.overrides.task)),  # type: ignore[arg-type]
            int(sweep_config.hydra.job.num),
            {str(k): str(v) for k, v in choices.items()},
        )
        previous["placement"] = None  # the job never ran anywhere
    record = {**previous, "status": status, "error": reason, "finished_at": _now()}
    if status == "interrupted":
        last = out_dir / "checkpoints" / "last.ckpt"
        record["resume_checkpoint"] = str(last) if last.is_file() else None
    out_dir.mkdir(parents=True, exist_ok=True)
    write_result(out_dir, record)
    log.error("job %s %s: %s", out_dir, status, reason)
    return record


def _init_options(init_cfg: DictConfig) -> dict[str, Any]:
    """``ray.init`` keyword arguments: the configured ones (nulls dropped), ``object_store_memory`` only
    for a Ray started here, and the forwarded environment in ``runtime_env.env_vars``."""
    init = {k: v for k, v in OmegaConf.to_container(init_cfg, resolve=True).items() if v is not None}  # type: ignore[union-attr]
    if init.get("address") is None:
        init.setdefault("object_store_memory", OBJECT_STORE_BYTES)
    runtime_env = dict(init.get("runtime_env") or {})
    runtime_env["env_vars"] = {**forwarded_env(), **dict(runtime_env.get("env_vars") or {})}
    init["runtime_env"] = runtime_env
    return init


def _stop(message: str) -> SystemExit:
    return SystemExit(f"ctrbench: error: {message}")


class RayLauncher(HydraRayLauncher):
    """hydra-ray-launcher's ``ray`` launcher, made fit for ctrbench sweeps (see the module docstring)."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import ray

        setup_globals()
        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir)).absolute()
        remote = dict(OmegaConf.to_container(self.ray_cfg.remote, resolve=True) or {})  # type: ignore[arg-type]
        self._start_ray(ray)
        threads = task_threads(remote)
        task = ray.remote(**remote)(run_job_in_ray) if remote else ray.remote(run_job_in_ray)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        log.info("Ray: launching %d jobs, sweep output dir %s", len(job_overrides), sweep_dir)
        submitted: list[tuple[Any, DictConfig, Path]] = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
            sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = f"job_id_for_{idx}"
                sweep_config.hydra.job.num = idx
                sweep_config.hydra.sweep.dir = str(sweep_dir)  # workers run elsewhere
                HydraConfig.instance().set_config(sweep_config)
                out_dir = sweep_dir / str(OmegaConf.select(sweep_config, "hydra.sweep.subdir"))
                with read_write(sweep_config.hydra.runtime):
                    sweep_config.hydra.runtime.output_dir = str(out_dir)
            ref = task.remote(
                self.hydra_context, sweep_config, self.task_function, Singleton.get_state(), threads
            )
            submitted.append((ref, sweep_config, out_dir))
        return self._collect(ray, submitted)

    def _start_ray(self, ray: Any) -> None:
        """``ray.init`` (unless this process already joined), then refuse a cluster that cannot run a
        job or whose workers do not import ctrbench; both in one line."""
        init = _init_options(self.ray_cfg.init)
        address = init.get("address")
        where = f"address {address}" if address else "started on this machine"
        if not ray.is_initialized():
            log.info(
                "Ray: %s", f"joining the cluster at {address}" if address else "starting on this machine"
            )
            try:
                ray.init(**init)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise _stop(f"Ray could not start or join a cluster ({where}): {first}") from None
        problem = resource_problem(
            dict(OmegaConf.to_container(self.ray_cfg.remote, resolve=True) or {}), ray.nodes(), where
        )  # type: ignore[arg-type]
        if problem:
            raise _stop(problem)
        try:
            info = ray.get(ray.remote(num_cpus=0)(_probe).remote())
        except ray.exceptions.RayError as exc:  # the worker could not even load ctrbench's probe
            info = {"python": "a Python", "error": _lost_reason(exc).split(": ", 1)[-1]}
        if "error" in info:
            raise _stop(
                f"the Ray workers ({where}) run {info['python']}, which cannot import ctrbench "
                f"({info['error']}): start the cluster from this environment ({sys.prefix}/bin/ray start)"
            )
        if os.path.realpath(info["prefix"]) != os.path.realpath(sys.prefix):
            log.warning(
                "Ray workers run %s (ctrbench %s), not this process's environment %s",
                info["python"],
                info["ctrbench"],
                sys.prefix,
            )

    def _collect(self, ray: Any, submitted: list[tuple[Any, DictConfig, Path]]) -> list[JobReturn]:
        """Each task's return, in order; a lost task's record written here (:func:`record_lost`)."""
        returns: list[JobReturn] = []
        try:
            for ref, sweep_config, out_dir in submitted:
                try:
                    returns.append(ray.get(ref))
                except ray.exceptions.RayError as exc:
                    record_lost(sweep_config, out_dir, exc)
                    returns.append(_settled_return(sweep_config))
        except BaseException:  # the sweep was interrupted: stop its tasks, let them record themselves
            pending = [ref for ref, _, _ in submitted[len(returns) :]]
            for ref in pending:
                ray.cancel(ref)
            if pending:
                ray.wait(pending, num_returns=len(pending), timeout=CANCEL_WAIT_S)
            raise
        return returns
