"""SIGTERM and SIGINT sent to a real ``ctrbench`` process: exit 128 + N, the running job recorded
``interrupted``, a sweep's summary of what finished; errors before a job starts and a record that
cannot be written fail only their job, in one line."""

from __future__ import annotations

import csv
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TINY

from ctrbench.engine import job

# Long enough to be interrupted while training (a few seconds an epoch), short when it is not.
SLOW = ["dataset.n_users=1500", "trainer.max_epochs=40", "logger=none", "trainer.enable_progress_bar=false"]


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    env = dict(os.environ, WANDB_MODE="disabled", PYTHONWARNINGS="ignore", HYDRA_FULL_ERROR="0")
    return subprocess.Popen(
        [sys.executable, "-m", "ctrbench", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: a terminal's Ctrl-C reaches every process of it
    )


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"ctrbench ended early ({proc.returncode}):\n{err[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the job to start training")
        time.sleep(0.2)


def _status(folder: Path) -> str | None:
    try:
        return json.loads((folder / "result.json").read_text()).get("status")
    except (OSError, ValueError):
        return None


def _finish(proc: subprocess.Popen, timeout: float = 120.0) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()


def _signal_when(
    args: list[str], cwd: Path, ready, sig: int = signal.SIGTERM, group: bool = False, settle: float = 1.0
) -> tuple[subprocess.Popen, str]:
    """Start ``ctrbench ARGS``, wait until ``ready()``, let it run ``settle`` s more, send ``sig`` (to
    the whole process group with ``group``, as a terminal's Ctrl-C does) and wait for the end;
    returns the process and its stderr. Nothing it started outlives the test."""
    proc = _start(args, cwd)
    try:
        _wait_for(ready, proc)
        time.sleep(settle)
        if group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        _, err = _finish(proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc, err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signalled_run_exits_128_plus_n_and_records_itself_interrupted(sig, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = ["model=base", *SLOW, f"hydra.run.dir={run_dir}"]
    proc, err = _signal_when(args, tmp_path, lambda: _status(run_dir) == "running", sig)  # while training
    assert proc.returncode == 128 + sig, err[-2000:]
    record = json.loads((run_dir / "result.json").read_text())
    assert record["status"] == "interrupted" and record["error"] == f"interrupted by {sig.name}"
    assert isinstance(record["epochs"], list) and record["finished_at"]
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        f"ctrbench: error: interrupted by {sig.name}; what finished is recorded, re-run the command to resume"
    )
    assert not list(run_dir.glob(".result.*"))  # the record was written atomically


def test_a_terminated_sweep_summarizes_what_finished(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    # job 0 is quick, job 1 is interrupted while it trains, job 2 never starts
    args = ["-m", "model=base", *SLOW, "trainer.max_epochs=1,40,2", f"hydra.sweep.dir={sweep}"]
    proc, err = _signal_when(
        args, tmp_path, lambda: _status(sweep / "0") == "ok" and _status(sweep / "1") == "running"
    )
    assert proc.returncode == 143, err[-2000:]
    assert "Traceback" not in err
    assert _status(sweep / "0") == "ok" and _status(sweep / "1") == "interrupted"
    assert not (sweep / "2" / "result.json").exists()
    with open(sweep / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    epochs = [next(o for o in r["variant"].split() if o.startswith("trainer.max_epochs=")) for r in rows]
    assert list(zip(epochs, [r["n_seeds"] for r in rows], [r["status"] for r in rows], strict=True)) == [
        ("trainer.max_epochs=1", "1", "ok"),
        ("trainer.max_epochs=40", "0", "interrupted"),
    ]
    md = (sweep / "summary.md").read_text()
    assert "Interrupted before 1 job started: 2 (" in md and "trainer.max_epochs=2" in md


def test_ctrl_c_under_the_gpus_launcher_is_one_line(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    slots = tmp_path / "slots"
    args = ["-m", "hydra/launcher=gpus", "hydra.launcher.n_jobs=2", "model=base,pnn,lr", *SLOW]
    both_running = lambda: _status(sweep / "0") == "running" and _status(sweep / "1") == "running"  # noqa: E731
    os.environ["CTRBENCH_SLOT_DIR"] = str(slots)  # inherited by the command; its own slots
    try:
        proc, err = _signal_when(
            [*args, f"hydra.sweep.dir={sweep}"], tmp_path, both_running, signal.SIGINT, group=True
        )
    finally:
        os.environ.pop("CTRBENCH_SLOT_DIR", None)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert {_status(sweep / "0"), _status(sweep / "1")} <= {"interrupted", "running"}
    assert (sweep / "summary.csv").is_file()


def test_an_error_before_the_job_starts_is_that_jobs_failed_record(tmp_path: Path) -> None:
    """``trainer.devices=${oc.env:...}`` unset: the launch check fails inside the job, the sweep goes on."""
    from conftest import run_cli

    sweep = tmp_path / "sweep"
    env_name = "CTRBENCH_TEST_UNSET_DEVICES"
    os.environ.pop(env_name, None)
    result = run_cli(
        ["-m", *TINY, "model=lr,base", f"trainer.devices=${{oc.env:{env_name}}}", f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    records = [json.loads((sweep / n / "result.json").read_text()) for n in ("0", "1")]
    assert [r["status"] for r in records] == ["failed", "failed"]
    assert all(env_name in r["error"] and "\n" not in r["error"] for r in records)
    assert "failed" in (sweep / "summary.csv").read_text()


def test_a_record_that_cannot_be_written_fails_the_job_and_keeps_the_earlier_record(
    compose_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = compose_cfg([*TINY, "model=lr", "resume=false"])
    first = job.run(cfg, tmp_path)
    assert first["status"] == "ok"
    before = (tmp_path / "result.json").read_bytes()

    def disk_full(job_dir, record):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(job, "write_result", disk_full)
    second = job.run(cfg, tmp_path)
    assert second["status"] == "failed"
    assert second["error"].startswith(f"record not written to {tmp_path}: OSError: [Errno 28]")
    assert "\n" not in second["error"]
    assert (tmp_path / "result.json").read_bytes() == before


def test_a_terminated_run_resumes_from_its_last_epoch_as_if_never_stopped(tmp_path: Path) -> None:
    """Slurm's preemption: SIGTERM after an epoch; the same command then continues from
    ``checkpoints/last.ckpt`` (weights, optimizer, epoch, history, batch order) and ends with the
    numbers of a run that was never stopped."""
    from conftest import run_cli

    args = ["model=base", "dataset.n_users=1500", "trainer.max_epochs=4", "logger=none"]
    # a fixed thread count: the float rounding must repeat across the three runs whatever else this
    # machine is doing (threads=auto would follow its load)
    args += ["trainer.enable_progress_bar=false", "threads=1"]
    run_dir, full_dir = tmp_path / "run", tmp_path / "full"
    last = run_dir / "checkpoints" / "last.ckpt"
    proc, err = _signal_when([*args, f"hydra.run.dir={run_dir}"], tmp_path, last.is_file, settle=0.0)
    assert proc.returncode == 143, err[-2000:]
    stopped = json.loads((run_dir / "result.json").read_text())
    assert stopped["status"] == "interrupted" and stopped["resume_checkpoint"] == str(last)
    assert 1 <= len(stopped["epochs"]) < 4

    resumed = run_cli([*args, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming" in resumed.stderr + resumed.stdout
    full = run_cli([*args, f"hydra.run.dir={full_dir}"], cwd=tmp_path)
    assert full.returncode == 0, full.stderr[-2000:]
    a = json.loads((run_dir / "result.json").read_text())
    b = json.loads((full_dir / "result.json").read_text())
    assert a["status"] == "ok" and a["resumed_from"] == str(last)
    assert [e["epoch"] for e in a["epochs"]] == [0, 1, 2, 3]
    for key in ("test_auc", "test_gauc", "test_logloss", "best_epoch"):
        assert a[key] == pytest.approx(b[key], abs=1e-9), key
    assert [e["train_loss"] for e in a["epochs"]] == pytest.approx([e["train_loss"] for e in b["epochs"]])
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.ckpt"]


def test_a_terminated_optuna_sweep_summarizes_its_trials(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    slow = [a for a in SLOW if not a.startswith("trainer.max_epochs=")]
    args = ["-m", "hydra/sweeper=optuna", "model=base", *slow, "trainer.max_epochs=choice(1, 40)"]
    args += ["hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=1", f"hydra.sweep.dir={sweep}"]
    # trial 0 is quick, trial 1 is interrupted while it trains, trial 2 is never asked
    args += ["hydra.sweeper.enqueue=[{trainer.max_epochs: 1}, {trainer.max_epochs: 40}]"]
    proc, err = _signal_when(
        args, tmp_path, lambda: _status(sweep / "0") == "ok" and _status(sweep / "1") == "running"
    )
    assert proc.returncode == 143, err[-2000:]
    assert "Traceback" not in err
    with open(sweep / "summary.csv", newline="") as f:
        statuses = sorted(r["status"] for r in csv.DictReader(f))
    assert statuses == ["interrupted", "ok"]
    assert not (sweep / "2").exists()  # the third trial was never asked
