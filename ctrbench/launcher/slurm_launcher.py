"""``hydra/launcher=slurm``: hydra-submitit-launcher's Slurm launcher, with a sweep that survives a
cancelled job and a cluster without an accounting database.

Out of the box, ``submitit_slurm`` collects every job with ``job.results()``, which raises for a job
that ended without a result (``scancel``, a node failure, SIGKILL after the time limit): the sweep
then stops before Hydra's multirun-end callbacks, so no summary is written, and the jobs still running
are abandoned. And submitit learns a job's state from ``sacct`` alone, which needs slurmdbd: without
it (``AccountingStorageType=accounting_storage/none``) a cancelled job, which never writes its result,
is waited for forever.

:class:`SlurmLauncher` submits exactly as ``submitit_slurm`` (one job array, one Slurm job per Hydra
job) and differs in three ways:

* a job that ended without a result becomes that job's return (value NaN) and its own record: the
  job's ``result.json`` says ``interrupted`` — written by the job itself on Slurm's SIGTERM
  (:mod:`ctrbench.engine.interrupt`), or here when the job was cancelled before it started or killed
  before it could write — so the sweep goes on and its summary lists the job;
* a job's torch uses as many threads as Slurm gave it CPUs (``cpus_per_task``), unless
  ``OMP_NUM_THREADS`` is set;
* job states come from ``sacct`` when accounting works, else from ``squeue --states=all``, which
  shows finished jobs (cancelled ones included) until ``MinJobAge`` (default 300 s) has passed; a
  job that was seen and is no longer known to the controller counts as ended. States are polled at
  least every ``CTRBENCH_SLURM_POLL_S`` seconds (default 30; submitit alone stretches the interval
  to 10 minutes).

A job whose function raised (a Hydra error in the job) still ends the sweep, as with submitit_slurm.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as SubmititSlurmLauncher
from omegaconf import OmegaConf, open_dict, read_write
from submitit.core.utils import FailedJobError, UncompletedJobError
from submitit.slurm.slurm import SlurmInfoWatcher, SlurmJob

__all__ = ["SlurmLauncher", "StateWatcher", "WatchedSlurmJob", "poll_seconds", "use_allocated_cpus"]

log = logging.getLogger("ctrbench")
POLL_ENV = "CTRBENCH_SLURM_POLL_S"
# seen by squeue, then unknown to slurmctld: a pending array task cancelled (it vanishes at once), or a
# job that ended more than MinJobAge (300 s by default) before this poll
GONE = "GONE"
_HEADER = "JobID|State|NodeList"
CLIENT_TIMEOUT_S = 60  # a sacct or squeue call that hangs (controller unreachable) counts as failed


def poll_seconds() -> float:
    """The longest wait between two job-state queries: ``CTRBENCH_SLURM_POLL_S`` (default 30)."""
    try:
        value = float(os.environ.get(POLL_ENV, "30"))
    except ValueError:
        return 30.0
    return value if value > 0 else 30.0


class StateWatcher(SlurmInfoWatcher):
    """submitit's ``sacct`` watcher, with ``squeue --states=all`` when ``sacct`` fails (no slurmdbd).

    Output of both has submitit's ``JobID|State|NodeList`` form (array tasks ``12_3``, pending ranges
    ``12_[4-7%2]``), parsed by submitit's own reader.
    """

    def __init__(self, delay_s: float = 30) -> None:
        super().__init__(delay_s=int(max(1, delay_s)))
        self._seen: set[str] = set()
        self.source = "sacct"

    def update_if_long_enough(self, mode: str) -> None:
        self._delay_s = int(max(1, poll_seconds()))
        super().update_if_long_enough(mode)

    def update(self) -> None:
        command = self._make_command()
        if command is None:
            return
        self._num_calls += 1
        ids = [command[i + 1] for i, arg in enumerate(command) if arg == "-j"]
        try:
            self._output = subprocess.check_output(command, stderr=subprocess.PIPE, timeout=CLIENT_TIMEOUT_S)
            self.source = "sacct"
            self._info_dict.update(self.read_info(self._output))
        except (OSError, subprocess.SubprocessError):
            self._from_squeue(ids)
        self._last_status_check = time.time()
        for job_id in self._registered - self._finished:
            if self.is_done(job_id, mode="cache"):
                self._finished.add(job_id)

    def _from_squeue(self, ids: Sequence[str]) -> None:
        if self.source != "squeue":
            log.info("sacct gives no job states here (no accounting database): asking squeue")
        self.source = "squeue"
        command = ["squeue", "--noheader", "--states=all", "--format=%i|%T|%N", "--jobs", ",".join(ids)]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=CLIENT_TIMEOUT_S)
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("squeue failed (%s): job states may be stale", exc)
            return
        if result.returncode != 0 and "Invalid job id" not in result.stderr:
            log.warning("squeue failed (%s): job states may be stale", result.stderr.strip())
            return
        info = self.read_info(f"{_HEADER}\n{result.stdout}") if result.returncode == 0 else {}
        self._info_dict.update(info)
        for job_id in self._registered - self._finished:
            if job_id in info:
                self._seen.add(job_id)
            elif job_id in self._seen:  # ended and purged from slurmctld's memory
                self._info_dict[job_id] = {"JobID": job_id, "State": GONE, "NodeList": ""}


class WatchedSlurmJob(SlurmJob):
    """submitit's ``SlurmJob`` polled by :class:`StateWatcher`; a cancelled job without a result
    raises :class:`UncompletedJobError` at once (submitit would first wait 15 s for a result file)."""

    watcher = StateWatcher()

    def results(self) -> list[Any]:
        self.wait()
        if not self.paths.result_pickle.exists():
            state = self.state.upper()
            if state.startswith("CANCELLED") or state == GONE:
                raise UncompletedJobError(f"Slurm job {self.job_id} ended {self.state} without a result")
        return super().results()


def use_allocated_cpus() -> int | None:
    """In a Slurm job: torch uses as many threads as the job has CPUs (``SLURM_CPUS_PER_TASK``), unless
    ``OMP_NUM_THREADS`` says otherwise (where Slurm does not bind tasks to their CPUs, torch would
    otherwise start one thread per core of the node). Returns the threads set, or None."""
    cpus = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if os.environ.get("OMP_NUM_THREADS") or not cpus.isdigit() or int(cpus) < 1:
        return None
    import torch

    torch.set_num_threads(int(cpus))
    return int(cpus)


class SlurmLauncher(SubmititSlurmLauncher):
    """``submitit_slurm`` whose sweep goes on past a job that ended without a result (see module doc)."""

    def __call__(self, *args: Any, **kwargs: Any) -> JobReturn:
        """One job, in its Slurm job: torch threads for its CPUs, then submitit_slurm's job."""
        use_allocated_cpus()
        return super().__call__(*args, **kwargs)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit

        assert self.config is not None
        params = dict(self.params)
        init_keys = {"submitit_folder", "max_num_timeout"}
        executor = submitit.AutoExecutor(
            cluster=self._EXECUTOR,
            folder=params["submitit_folder"],
            slurm_max_num_timeout=params.get("max_num_timeout", 0),
        )
        generic = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(
            **{
                (key if key in generic else f"{self._EXECUTOR}_{key}"): value
                for key, value in params.items()
                if key not in init_keys
            }
        )
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        log.info("Submitit '%s' sweep output dir : %s", self._EXECUTOR, sweep_dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        job_params: list[tuple[Any, ...]] = []
        for offset, overrides in enumerate(job_overrides):
            idx = initial_job_idx + offset
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
            job_params.append(
                (list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state())
            )
        submitted = executor.map_array(self, *zip(*job_params, strict=True))
        # the same Slurm jobs, watched by StateWatcher (submitit builds array jobs as plain SlurmJob)
        jobs = [
            WatchedSlurmJob(folder=executor.folder, job_id=job.job_id, tasks=list(range(job.num_tasks)))
            for job in submitted
        ]
        return [
            self._collect(job, list(overrides), initial_job_idx + offset)
            for offset, (job, overrides) in enumerate(zip(jobs, job_overrides, strict=True))
        ]

    def _collect(self, job: Any, overrides: list[str], idx: int) -> JobReturn:
        """The job's own return; for a job that ended without one, its record (see :func:`uncompleted`)."""
        try:
            return job.results()[0]
        except FailedJobError:  # the job's function raised: as submitit_slurm, the sweep stops
            raise
        except UncompletedJobError:
            state = job.state
            log.warning("job #%d (Slurm job %s) ended %s without a result", idx, job.job_id, state)
            return self.uncompleted(overrides, idx, job.job_id, state)

    def uncompleted(self, overrides: list[str], idx: int, slurm_id: str, state: str) -> JobReturn:
        """The return of job ``idx`` that ended without a result: value NaN, its Hydra config (so the
        summary finds its folder), and an ``interrupted`` record in its folder when the job left none
        or one that still says ``running``."""
        assert self.hydra_context is not None and self.config is not None
        sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(sweep_config.hydra.job):
            sweep_config.hydra.job.id = slurm_id
            sweep_config.hydra.job.num = idx
        out_dir = Path(str(sweep_config.hydra.sweep.dir), str(sweep_config.hydra.sweep.subdir)).absolute()
        with read_write(sweep_config.hydra.runtime):
            sweep_config.hydra.runtime.output_dir = str(out_dir)
        hydra_cfg = OmegaConf.create({"hydra": OmegaConf.to_container(sweep_config.hydra, resolve=False)})
        task_cfg = sweep_config.copy()
        with open_dict(task_cfg):
            del task_cfg["hydra"]
        try:
            _record_uncompleted(task_cfg, sweep_config.hydra, out_dir, slurm_id, state)
        except Exception as exc:  # the record is a courtesy: the sweep and its summary go on
            log.warning("could not record job #%d (Slurm job %s) as interrupted: %s", idx, slurm_id, exc)
        return JobReturn(
            overrides=overrides,
            cfg=task_cfg,
            hydra_cfg=hydra_cfg,
            working_dir=str(out_dir),
            task_name=str(sweep_config.hydra.job.name),
            status=JobStatus.COMPLETED,
            _return_value=float("nan"),
        )


def _record_uncompleted(cfg: Any, hydra: Any, out_dir: Path, slurm_id: str, state: str) -> None:
    """Write ``interrupted`` into the record of a job that Slurm ended before the job could."""
    import json

    from ctrbench.results import write_result
    from ctrbench.results.record import RESULT_FILE

    path = out_dir / RESULT_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, ValueError):
        record = None
    if isinstance(record, dict) and record.get("status") != "running":
        return  # the job recorded its end itself (interrupted on SIGTERM)
    if not isinstance(record, dict):
        from ctrbench import registry
        from ctrbench.engine.job import new_record

        choices = {kind: hydra.runtime.choices.get(kind) for kind in registry.KINDS}
        record = new_record(cfg, list(hydra.overrides.task), int(hydra.job.num), choices)
        array_id, _, task = slurm_id.partition("_")  # never ran: only Slurm's name for it is known
        slurm = {"array_job_id": array_id, "array_task_id": task} if task else {"job_id": slurm_id}
        record["placement"] = {key: None for key in record["placement"]} | {"slurm": slurm}
    if state == GONE:  # a pending array task cancelled leaves no trace in slurmctld
        why = "left the queue (cancelled before it started, or ended MinJobAge ago) without a record"
    else:
        why = f"ended {state} before the job recorded its end"
    record.update(
        status="interrupted",
        error=f"Slurm job {slurm_id} {why}",
        finished_at=datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
    )
    write_result(out_dir, record)
