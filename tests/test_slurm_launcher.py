"""hydra/launcher=slurm against a real single-node Slurm (scripts/local-slurm): munged, slurmctld and
slurmd on 127.0.0.1, two fake GPUs as generic resources, no accounting database.

Needs root and Debian's ``slurm-wlm munge`` (CI installs them); skipped otherwise.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, TINY, run_cli

SCRIPT = ROOT / "scripts" / "local-slurm"
MISSING = [
    exe for exe in ("munged", "mungekey", "slurmctld", "slurmd", "sbatch") if shutil.which(exe) is None
]

pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
pytest.importorskip("submitit")
needs_cluster = pytest.mark.skipif(
    bool(MISSING) or os.geteuid() != 0,
    reason=f"needs root and Slurm and munge: apt-get install -y slurm-wlm munge (missing: {MISSING})",
)

# every job: one CPU and 1 GiB of the node, trained on the CPU (the GPUs are placeholders)
SMALL = ["hydra.launcher.partition=local", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1"]
TRAIN = [*TINY, "trainer.accelerator=cpu"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A Slurm cluster for this module's tests, torn down at the end (also when bringing it up failed)."""
    folder = tmp_path_factory.mktemp("slurm")
    env = dict(os.environ, LOCAL_SLURM_GPUS="2")
    try:
        up = subprocess.run(
            [str(SCRIPT), "up", str(folder)], env=env, capture_output=True, text=True, timeout=120
        )
        assert up.returncode == 0, up.stdout + up.stderr
        assert up.stdout.strip() == f"export SLURM_CONF={folder}/slurm.conf"
        yield folder
    finally:
        subprocess.run([str(SCRIPT), "down", str(folder)], env=env, capture_output=True, timeout=120)


@pytest.fixture
def slurm_env(cluster: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The environment a user of that cluster has: SLURM_CONF, and quick state polls for the test."""
    monkeypatch.setenv("SLURM_CONF", str(cluster / "slurm.conf"))
    monkeypatch.setenv("CTRBENCH_SLURM_POLL_S", "1")
    return cluster


def slurm(*args: str) -> str:
    """A Slurm client command's output (SLURM_CONF from the environment)."""
    return subprocess.run(list(args), capture_output=True, text=True, check=True, timeout=30).stdout


def records(sweep: Path) -> dict[int, dict[str, Any]]:
    return {
        int(p.parent.name): json.loads(p.read_text())
        for p in sweep.glob("*/result.json")
        if p.parent.name.isdigit()
    }


def completion_log(job_ids: list[str]) -> dict[str, tuple[str, str, str]]:
    """(state, start, end) per raw Slurm job id from the job-completion log, read by `sacct -c` (there is
    no slurmdbd here); times to the second."""
    out = slurm("sacct", "-c", "-o", "JobID,State,Start,End", "--parsable2", "-j", ",".join(job_ids))
    rows = [line.split("|") for line in out.splitlines()[1:] if line]
    return {row[0]: (row[1], row[2], row[3]) for row in rows}


def completion_states(job_ids: list[str]) -> dict[str, str]:
    return {job: state for job, (state, _, _) in completion_log(job_ids).items()}


def when(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def summary_rows(sweep: Path) -> list[dict[str, str]]:
    with (sweep / "summary.csv").open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.cluster
@needs_cluster
def test_slurm_sweep_runs_every_job_as_its_own_slurm_job_on_its_own_gpu(
    slurm_env: Path, tmp_path: Path
) -> None:
    """lr and base over two seeds: four Slurm jobs (one array), two at a time on the two fake GPUs; a
    re-run into the same folder skips all four."""
    sweep = tmp_path / "sweep"
    args = [
        "-m",
        *TRAIN,
        "hydra/launcher=slurm",
        *SMALL,
        "model=lr,base",
        "seed=1,2",
        f"hydra.sweep.dir={sweep}",
    ]
    proc = run_cli(args, cwd=tmp_path, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    first = records(sweep)
    assert sorted(first) == list(range(4))
    assert {(r["model"], r["seed"]): r["status"] for r in first.values()} == {
        (m, s): "ok" for m in ("lr", "base") for s in (1, 2)
    }

    # each job its own Slurm job (tasks of one array), each seen by Slurm to completion
    slurm_ids = [r["placement"]["slurm"] for r in first.values()]
    job_ids = [s["job_id"] for s in slurm_ids]
    assert len(set(job_ids)) == 4
    assert len({s["array_job_id"] for s in slurm_ids}) == 1
    assert sorted(int(s["array_task_id"]) for s in slurm_ids) == list(range(4))
    slurm_log = completion_log(job_ids)
    assert {job: state for job, (state, _, _) in slurm_log.items()} == {j: "COMPLETED" for j in job_ids}

    # each job saw one GPU of the two; jobs whose allocations overlapped (Slurm's start and end, whole
    # seconds: a strict overlap there is a real one) never shared one
    devices = {n: r["placement"]["cuda_visible_devices"] for n, r in first.items()}
    assert set(devices.values()) <= {"0", "1"}, devices
    spans = {
        n: (
            when(slurm_log[r["placement"]["slurm"]["job_id"]][1]),
            when(slurm_log[r["placement"]["slurm"]["job_id"]][2]),
        )
        for n, r in first.items()
    }
    overlapping = [
        (a, b)
        for a in spans
        for b in spans
        if a < b and spans[a][0] < spans[b][1] and spans[b][0] < spans[a][1]
    ]
    assert overlapping, spans  # two slots: some jobs ran side by side
    for n, r in first.items():  # and each job ran inside its Slurm job's allocation
        start, end = spans[n]
        assert start <= when(r["started_at"]) and when(r["finished_at"]) < end + 1, (r, spans[n])
    assert all(devices[a] != devices[b] for a, b in overlapping), (devices, spans)
    rows = {(r["model"], r["status"], r["n_seeds"]) for r in summary_rows(sweep)}
    assert rows == {("lr", "ok", "2"), ("base", "ok", "2")}

    again = run_cli(args, cwd=tmp_path, timeout=240)
    assert again.returncode == 0, again.stderr[-3000:]
    assert records(sweep) == first  # skipped: every record is the first run's, untouched
    assert {(r["model"], r["status"], r["n_seeds"]) for r in summary_rows(sweep)} == rows


@pytest.mark.cluster
@needs_cluster
def test_scancel_makes_a_job_interrupted_and_the_sweep_goes_on(
    slurm_env: Path, fake_plugins: Path, tmp_path: Path
) -> None:
    """hydra/launcher=slurm_cpu, lr and the failing kaput, each with 300 and 1 epochs, two jobs at a time:
    job 0 (lr, 300 epochs) is cancelled while it trains (Slurm's SIGTERM: the job records itself
    interrupted), job 3 while it waits for a slot (it never starts: the launcher records it); job 1
    finishes, job 2 fails; the sweep goes on and its summary has all four rows."""
    sweep = tmp_path / "sweep"
    args = [
        "-m",
        *TRAIN,
        "hydra/launcher=slurm_cpu",
        *SMALL,
        "model=lr,kaput",
        "trainer.max_epochs=300,1",
        "hydra.launcher.array_parallelism=2",  # job 3 waits for a free slot on any machine
        f"hydra.sweep.dir={sweep}",
    ]
    env = dict(os.environ, WANDB_MODE="disabled", HYDRA_FULL_ERROR="0", PYTHONWARNINGS="ignore")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(fake_plugins), env.get("PYTHONPATH", "")) if p)
    log = tmp_path / "sweep.log"
    with log.open("w") as out:  # a file, not a pipe nobody reads while the sweep runs
        proc = subprocess.Popen(
            [sys.executable, "-m", "ctrbench", *args], cwd=tmp_path, env=env, stdout=out, stderr=out
        )
    try:
        pending = running = None
        deadline = time.monotonic() + 120
        while (pending is None or running is None) and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()[-3000:]
            queue = slurm("squeue", "--noheader", "--format=%i|%T")
            states = dict(line.split("|") for line in queue.splitlines() if line)
            if pending is None:
                array = next((i.split("_")[0] for i in states), None)
                if array is not None and states.get(f"{array}_3", "PENDING") == "PENDING":
                    pending = f"{array}_3"
                    slurm("scancel", pending)  # still waiting for a slot: cancelled before it starts
            record = records(sweep).get(0)
            if running is None and record and record["status"] == "running":
                where = record["placement"]["slurm"]
                running = f"{where['array_job_id']}_{where['array_task_id']}"
                slurm("scancel", running)  # training: Slurm sends SIGTERM
            time.sleep(0.3)
        assert pending and running, slurm("squeue", "--states=all")
        proc.wait(timeout=150)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, log.read_text()[-3000:]
    done = records(sweep)
    assert sorted(done) == [0, 1, 2, 3]
    assert [(done[n]["model"], done[n]["config"]["trainer"]["max_epochs"]) for n in range(4)] == [
        ("lr", 300),
        ("lr", 1),
        ("kaput", 300),
        ("kaput", 1),
    ]
    assert [done[n]["status"] for n in range(4)] == ["interrupted", "ok", "failed", "interrupted"]
    assert done[0]["error"] == "interrupted by SIGTERM"  # written by the job itself
    assert done[0]["placement"]["pid"] is not None
    assert "kaput needs a library" in done[2]["error"]
    assert done[3]["error"] == (  # a cancelled pending task vanishes from slurmctld at once
        f"Slurm job {pending} left the queue (cancelled before it started, or ended MinJobAge ago) "
        "without a record"
    )
    assert done[3]["placement"]["pid"] is None and done[3]["placement"]["slurm"] == {
        "array_job_id": pending.split("_")[0],
        "array_task_id": "3",
    }

    ran = {n: done[n]["placement"]["slurm"]["job_id"] for n in (0, 1, 2)}
    assert completion_states(list(ran.values())) == {
        ran[0]: "CANCELLED",
        ran[1]: "COMPLETED",
        ran[2]: "COMPLETED",  # kaput's failure is the job's own record: the Slurm job ends normally
    }
    rows = summary_rows(sweep)
    assert len(rows) == 4, rows
    assert sorted((r["model"], r["status"]) for r in rows) == [
        ("kaput", "failed"),
        ("kaput", "interrupted"),
        ("lr", "interrupted"),
        ("lr", "ok"),
    ]


@pytest.mark.cluster
@needs_cluster
def test_local_slurm_brings_one_node_up_and_takes_everything_down(tmp_path: Path) -> None:
    """`up`: one idle node with this machine's CPUs and the fake GPUs, daemons on 127.0.0.1; `down`:
    every daemon gone and the folder removed."""
    folder = tmp_path / "cluster"
    env = dict(os.environ, LOCAL_SLURM_GPUS="3", SLURM_CONF=str(folder / "slurm.conf"))
    try:
        up = subprocess.run(
            [str(SCRIPT), "up", str(folder)], env=env, capture_output=True, text=True, timeout=120
        )
        assert up.returncode == 0, up.stderr
        node = subprocess.run(
            ["sinfo", "--noheader", "--Node", "--format=%T|%c|%G|%P"], env=env, capture_output=True, text=True
        ).stdout.split()
        cpus = next(f for f in slurm("slurmd", "-C").split() if f.startswith("CPUs=")).removeprefix("CPUs=")
        assert node == [f"idle|{cpus}|gpu:3|local*"]  # this machine's CPUs, as slurmd counts them
        conf = (folder / "slurm.conf").read_text()
        assert (
            "(127.0.0.1)" in conf
            and "NodeAddr=127.0.0.1" in conf
            and "AutoDetect=off" in (folder / "gres.conf").read_text()
        )
        again = subprocess.run([str(SCRIPT), "up", str(folder)], env=env, capture_output=True, text=True)
        assert again.returncode == 1 and "already runs" in again.stderr
        pids = [int((folder / f).read_text()) for f in ("slurmd.pid", "slurmctld.pid", "munge/munged.pid")]
    finally:
        down = subprocess.run([str(SCRIPT), "down", str(folder)], capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stderr
    assert not folder.exists()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


# ---- job states without a cluster: fake sacct and squeue ----------------------------------------------
def fake_clients(bin_dir: Path, sacct: str, squeue_file: Path) -> None:
    """``sacct`` running ``sacct`` (shell text); ``squeue`` printing ``squeue_file`` (exit 1 when absent,
    as squeue does when no id it is asked about is known)."""
    bin_dir.mkdir(exist_ok=True)
    scripts = {
        "sacct": f"#!/bin/sh\n{sacct}\n",
        "squeue": f"#!/bin/sh\n[ -f {squeue_file} ] && exec cat {squeue_file}\n"
        "echo 'slurm_load_jobs error: Invalid job id specified' >&2; exit 1\n",
    }
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)


def test_states_come_from_squeue_without_accounting_and_a_vanished_job_has_ended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ctrbench.launcher.slurm_launcher import GONE, StateWatcher

    queue = tmp_path / "queue.txt"
    fake_clients(tmp_path / "bin", "echo 'Slurm accounting storage is disabled' >&2; exit 1", queue)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    watcher = StateWatcher()
    for job in ("7_0", "7_1", "7_2"):
        watcher.register_job(job)

    queue.write_text("7_0|RUNNING|vm\n7_[1-2]|PENDING|\n")
    assert [watcher.get_state(j, mode="force") for j in ("7_0", "7_1", "7_2")] == [
        "RUNNING",
        "PENDING",
        "PENDING",
    ]
    assert watcher.source == "squeue" and not any(
        watcher.is_done(j, mode="cache") for j in ("7_0", "7_1", "7_2")
    )

    queue.write_text("7_0|CANCELLED|vm\n7_2|RUNNING|vm\n")  # 7_1 cancelled while pending: no trace
    watcher.update()
    assert [watcher.get_state(j, mode="cache") for j in ("7_0", "7_1", "7_2")] == [
        "CANCELLED",
        GONE,
        "RUNNING",
    ]
    assert watcher.is_done("7_0", mode="cache") and watcher.is_done("7_1", mode="cache")
    assert not watcher.is_done("7_2", mode="cache")

    queue.unlink()  # purged after MinJobAge: squeue knows none of them
    watcher.update()
    assert watcher.get_state("7_2", mode="cache") == GONE and watcher.is_done("7_2", mode="cache")

    never_seen = StateWatcher()  # a job squeue never listed is not taken for ended
    never_seen.register_job("8_0")
    assert never_seen.get_state("8_0", mode="force") == "UNKNOWN"


def test_sacct_is_asked_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ctrbench.launcher.slurm_launcher import StateWatcher

    queue = tmp_path / "queue.txt"
    queue.write_text("9_0|RUNNING|vm\n")  # squeue would say running; sacct, when it works, wins
    fake_clients(tmp_path / "bin", "printf 'JobID|State|NodeList\\n9_0|COMPLETED|vm\\n'", queue)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    watcher = StateWatcher()
    watcher.register_job("9_0")
    assert watcher.get_state("9_0", mode="force") == "COMPLETED" and watcher.source == "sacct"


def test_poll_interval_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from ctrbench.launcher.slurm_launcher import poll_seconds

    monkeypatch.delenv("CTRBENCH_SLURM_POLL_S", raising=False)
    assert poll_seconds() == 30.0
    for value, expected in (("2", 2.0), ("0.5", 0.5), ("-1", 30.0), ("soon", 30.0)):
        monkeypatch.setenv("CTRBENCH_SLURM_POLL_S", value)
        assert poll_seconds() == expected


def test_a_running_record_left_by_a_killed_job_becomes_interrupted(tmp_path: Path) -> None:
    from ctrbench.launcher.slurm_launcher import _record_uncompleted

    running = {"status": "running", "error": None, "model": "lr", "seed": 1, "started_at": "t0"}
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "result.json").write_text(json.dumps(running))
    _record_uncompleted(None, None, tmp_path / "a", "5_1", "CANCELLED by 0")
    record = json.loads((tmp_path / "a" / "result.json").read_text())
    assert record["status"] == "interrupted" and record["started_at"] == "t0"
    assert record["error"] == "Slurm job 5_1 ended CANCELLED by 0 before the job recorded its end"

    own = {**running, "status": "interrupted", "error": "interrupted by SIGTERM"}  # the job's own: kept
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "result.json").write_text(json.dumps(own))
    _record_uncompleted(None, None, tmp_path / "b", "5_2", "CANCELLED")
    assert json.loads((tmp_path / "b" / "result.json").read_text()) == own


def test_presets_fit_a_cluster(compose_cfg) -> None:
    from hydra import compose

    from ctrbench.launcher.hydra_launchers import SLURM_TARGET

    def launcher(option: str) -> Any:
        return compose(
            "config", overrides=[f"hydra/launcher={option}"], return_hydra_config=True
        ).hydra.launcher

    gpu, cpu = launcher("slurm"), launcher("slurm_cpu")
    assert gpu._target_ == cpu._target_ == SLURM_TARGET
    assert (gpu.gpus_per_task, gpu.cpus_per_task, gpu.mem_gb, gpu.timeout_min) == (1, 4, 32, 120)
    assert (cpu.gpus_per_task, cpu.cpus_per_task, cpu.mem_gb, cpu.timeout_min) == (None, 4, 16, 120)


def test_a_slurm_job_uses_as_many_torch_threads_as_it_has_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from ctrbench.launcher.slurm_launcher import use_allocated_cpus

    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
        assert use_allocated_cpus() == 3 and torch.get_num_threads() == 3
        monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the user's choice wins
        assert use_allocated_cpus() is None
        monkeypatch.delenv("OMP_NUM_THREADS")
        monkeypatch.delenv("SLURM_CPUS_PER_TASK")  # not in a Slurm job (or no --cpus-per-task)
        assert use_allocated_cpus() is None
    finally:
        torch.set_num_threads(before)
