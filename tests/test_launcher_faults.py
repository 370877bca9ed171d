"""hydra/launcher=gpus under faults: a killed sweep, a GPU listed twice, sweeps with different TMPDIRs."""

from __future__ import annotations

import csv
import errno
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FAKE_MODEL, TINY, make_dist, run_cli

from ctrbench.launcher import LaunchError, check_args, gpu_slots

# A model whose construction marks the running job (a file named after the worker's pid) and then sleeps:
# a job that is surely running when the test kills the sweep.
SLOW_MODEL = (
    FAKE_MODEL
    + """

import os
import time
from pathlib import Path


class SlowModel(MeanModel):
    def __init__(self, config, *, schema, activation):
        super().__init__(config, schema=schema, activation=activation)
        marks = Path(os.environ["SLOW_MARKS"])
        marks.mkdir(parents=True, exist_ok=True)
        (marks / str(os.getpid())).write_text(os.environ.get("CUDA_VISIBLE_DEVICES", ""))
        time.sleep(float(os.environ.get("SLOW_SLEEP", "120")))
"""
)


def _lock_is_free(path: Path) -> bool:
    """Whether a non-blocking exclusive flock on ``path`` succeeds right now (released again at once)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return False
        raise
    finally:
        os.close(fd)  # closing drops the lock, if taken
    return True


def _alive(pid: int) -> bool:
    """A process that exists and is not a zombie (a zombie holds no files, so no lock)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _group_members(pgid: int) -> list[int]:
    """Live processes of process group ``pgid`` (from /proc)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


@pytest.fixture
def slow_plugin(tmp_path: Path) -> Path:
    return make_dist(
        tmp_path / "site",
        "slowplugin",
        """
        [ctrbench.models]
        slow = slowplugin.slow:SlowModel
        """,
        {"slowplugin/__init__.py": "", "slowplugin/slow.py": SLOW_MODEL},
    )


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
def test_killed_sweep_leaves_no_worker_and_frees_its_gpus(
    tmp_path: Path, slow_plugin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kill -9 of the sweep's main process while both workers run a job: the workers exit within a few
    seconds (they would otherwise sleep on, orphaned, holding their GPU locks), their jobs recorded
    ``interrupted``, and a new sweep on the same GPUs runs."""
    slots, marks = tmp_path / "slots", tmp_path / "marks"
    env = dict(
        os.environ,
        CTRBENCH_GPUS="0,1",
        CTRBENCH_SLOT_DIR=str(slots),
        CTRBENCH_SLOT_TIMEOUT="5",
        SLOW_MARKS=str(marks),
        SLOW_SLEEP="120",
        WANDB_MODE="disabled",
        PYTHONWARNINGS="ignore",
        PYTHONPATH=os.pathsep.join(p for p in (str(slow_plugin), os.environ.get("PYTHONPATH", "")) if p),
    )
    args = [
        "-m",
        *TINY,
        "hydra/launcher=gpus",
        "hydra.launcher.n_jobs=2",
        "model=slow",
        "seed=1,2",
        "trainer.accelerator=cpu",
        f"hydra.sweep.dir={tmp_path / 'killed'}",
    ]
    log = tmp_path / "killed.log"
    with open(log, "wb") as out:
        main = subprocess.Popen(
            [sys.executable, "-m", "ctrbench", *args],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the finally below can end everything it started
        )
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 180
        while len(workers) < 2:
            assert main.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the two jobs never started:\n" + log.read_text()[-3000:]
            time.sleep(0.2)
            workers = [int(p.name) for p in marks.iterdir()] if marks.is_dir() else []
        assert main.pid not in workers  # the jobs run in loky workers
        locks = [slots / "gpu0.lock", slots / "gpu1.lock"]
        assert not any(_lock_is_free(lock) for lock in locks)  # each worker holds its GPU

        os.kill(main.pid, signal.SIGKILL)
        main.wait(10)
        killed_at = time.monotonic()
        while any(map(_alive, workers)) and time.monotonic() - killed_at < 10:
            time.sleep(0.1)
        gone_after = time.monotonic() - killed_at
        assert not any(map(_alive, workers)), f"workers {workers} still alive 10 s after the sweep was killed"
        assert all(_lock_is_free(lock) for lock in locks)
        while _group_members(main.pid) and time.monotonic() - killed_at < 10:
            time.sleep(0.1)  # nothing else the sweep started (loky's resource tracker) lingers either
        assert _group_members(main.pid) == []
        assert "launching process" in log.read_text()  # each worker said why it exits
        # warned by SIGTERM before the hard exit, each job recorded itself interrupted (a re-run resumes it)
        records = sorted((tmp_path / "killed").glob("*/result.json"))
        assert [json.loads(p.read_text())["status"] for p in records] == ["interrupted", "interrupted"]
        print(f"orphaned workers gone {gone_after:.1f} s after kill -9")
    finally:
        try:
            os.killpg(main.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        main.wait(10)
        for pid in workers:  # in the group too, unless one left it
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    sweep = tmp_path / "again"
    monkeypatch.setenv("CTRBENCH_GPUS", "0,1")
    monkeypatch.setenv("CTRBENCH_SLOT_DIR", str(slots))
    monkeypatch.setenv("CTRBENCH_SLOT_TIMEOUT", "5")
    proc = run_cli(
        [
            "-m",
            *TINY,
            "hydra/launcher=gpus",
            "hydra.launcher.n_jobs=2",
            "model=lr,base",
            "trainer.accelerator=cpu",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(sweep / "summary.csv", newline="") as fh:
        assert {row["status"] for row in csv.DictReader(fh)} == {"ok"}
    for job in sweep.glob("[0-9]*"):
        assert json.loads((job / "result.json").read_text())["status"] == "ok"


# ---- a worker blocked on a pipe write, a forked child, a stale pid ------------------------------------
LAUNCHER_SCRIPT = """
import multiprocessing as mp
import os
import sys


def work(marks):
    from ctrbench.launcher import gpu_slots

    gpu_slots.claim_gpu()
    _, w = os.pipe()
    open(os.path.join(marks, str(os.getpid())), "w").close()
    while True:
        os.write(w, b"x" * 65536)  # nobody reads: blocks for good once the pipe is full


if __name__ == "__main__":
    worker = mp.get_context("spawn").Process(target=work, args=(sys.argv[1],))
    worker.start()
    worker.join()
"""

# Claims a slot from the environment, says so on stdout, holds it until stdin closes. With TEST_FORK,
# first forks a child that sleeps (as a DataLoader worker would live on); TEST_DEVICES fakes nvidia-smi.
HOLDER_SCRIPT = """
import json, os, sys, time
from ctrbench.launcher import gpu_slots

devices = [tuple(d) for d in json.loads(os.environ.get("TEST_DEVICES", "[]"))]
gpu_slots.nvidia_smi_devices = lambda: devices
try:
    slot = gpu_slots.claim_gpu()
except gpu_slots.NoFreeSlot as exc:
    print("NoFreeSlot", exc, flush=True)
    sys.exit(3)
print("held", os.getpid(), slot.path, flush=True)
if os.environ.get("TEST_FORK"):
    if os.fork() == 0:  # the child says so once it runs (after the fork hooks)
        print("child", os.getpid(), flush=True)
        time.sleep(60)
        os._exit(0)
sys.stdin.read()
"""


def _holder(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", HOLDER_SCRIPT],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _claim_and_release(env: dict[str, str]) -> subprocess.CompletedProcess:
    """A holder that claims a slot and exits at once (empty stdin): its exit code and what it printed."""
    return subprocess.run(
        [sys.executable, "-c", HOLDER_SCRIPT], env=env, input="", capture_output=True, text=True, timeout=60
    )


def _end(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(10)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CTRBENCH_", "CUDA_VISIBLE"))}
    env.update(CTRBENCH_SLOT_TIMEOUT="0", **extra)
    return env


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
def test_worker_blocked_on_a_pipe_write_exits_when_its_parent_is_killed(tmp_path: Path) -> None:
    script, marks, slots = tmp_path / "launch.py", tmp_path / "marks", tmp_path / "slots"
    script.write_text(LAUNCHER_SCRIPT)
    marks.mkdir()
    env = _env(CTRBENCH_GPUS="0", CTRBENCH_SLOT_DIR=str(slots))
    launcher = subprocess.Popen([sys.executable, str(script), str(marks)], env=env, start_new_session=True)
    worker = None
    try:
        deadline = time.monotonic() + 60
        while worker is None:
            assert launcher.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
            worker = next((int(p.name) for p in marks.iterdir()), None)
        time.sleep(0.5)  # the worker is now blocked in os.write
        assert _alive(worker) and not _lock_is_free(slots / "gpu0.lock")
        os.kill(launcher.pid, signal.SIGKILL)
        launcher.wait(10)
        killed_at = time.monotonic()
        while _alive(worker) and time.monotonic() - killed_at < 10:
            time.sleep(0.1)
        assert not _alive(worker), "a worker blocked on a pipe outlived its parent by 10 s"
        assert time.monotonic() - killed_at < 1 + gpu_slots.PARENT_POLL_S + gpu_slots.ORPHAN_GRACE_S
        assert _lock_is_free(slots / "gpu0.lock")
    finally:
        _end(launcher)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_does_not_keep_the_slot_of_a_killed_holder(tmp_path: Path) -> None:
    """A DataLoader-style forked child of the claiming process outlives it: the slot must not."""
    slots = tmp_path / "slots"
    holder = _holder(_env(CTRBENCH_GPUS="0", CTRBENCH_SLOT_DIR=str(slots), TEST_FORK="1"))
    child = None
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().startswith("held ")
        child = int(holder.stdout.readline().split()[1])
        assert not _lock_is_free(slots / "gpu0.lock")
        os.kill(holder.pid, signal.SIGKILL)  # the kernel drops the flock with the last descriptor
        holder.wait(10)
        assert _alive(child)
        assert _lock_is_free(slots / "gpu0.lock")
    finally:
        _end(holder)  # the child is in the holder's process group


def test_unusable_slot_folder_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(gpu_slots.SlotFolderError) as info:
        gpu_slots.claim_slot(["0"], tmp_path / "file")
    assert str(info.value).startswith(f"GPU slot folder {tmp_path / 'file'}: exists and is not a folder; ")
    assert "CTRBENCH_SLOT_DIR" in str(info.value) and "\n" not in str(info.value)
    assert gpu_slots.held_slot() is None


def test_stale_pid_in_a_lock_file_does_not_block(tmp_path: Path) -> None:
    slots = tmp_path / "slots"
    slots.mkdir()
    (slots / "gpu0.lock").write_text("999999999 nobody ctrbench\n")  # a holder long gone
    holder = _holder(_env(CTRBENCH_GPUS="0", CTRBENCH_SLOT_DIR=str(slots)))
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().split()[:2] == ["held", str(holder.pid)]
        assert (slots / "gpu0.lock").read_text().split()[0] == str(holder.pid)  # who holds it now
    finally:
        _end(holder)


# ---- one GPU named twice --------------------------------------------------------------------------------
DEVICES = [
    ("0", "GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a9e"),
    ("1", "GPU-77e2c1aa-0b1c-4d4e-8f00-123456789abc"),
]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"CTRBENCH_GPUS": "0,0"}, "CTRBENCH_GPUS=0,0 names GPU 0 twice (entries 1 and 2)"),
        ({"CUDA_VISIBLE_DEVICES": "1,0,1"}, "CUDA_VISIBLE_DEVICES=1,0,1 names GPU 1 twice (entries 1 and 3)"),
        ({"CTRBENCH_GPUS": "0, 00"}, "names GPU 0 twice, as '0' and as '00' (entries 1 and 2)"),
        (
            {"CUDA_VISIBLE_DEVICES": "0,1,GPU-5d5ba0d6"},  # a UUID prefix, as CUDA accepts
            "names GPU 0 twice, as '0' and as 'GPU-5d5ba0d6' "
            "(entries 1 and 3; nvidia-smi -L gives it index 0): hydra/launcher=gpus",
        ),
        (
            {"CTRBENCH_GPUS": "gpu-77e2c1aa-0b1c-4d4e-8f00-123456789abc,1"},
            "(entries 1 and 2; nvidia-smi -L gives it index 1)",
        ),
        (
            {"CTRBENCH_GPUS": "GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a9e,GPU-5d5b"},  # no mapping needed
            "names GPU 0 twice, as 'GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a9e' and as 'GPU-5d5b'",
        ),
    ],
)
def test_gpu_named_twice_is_refused_up_front(
    env: dict[str, str], expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(LaunchError) as info:
        check_args(["-m", "hydra/launcher=gpus", "model=lr,base"], env=env, devices=DEVICES)
    message = str(info.value)
    assert expected in message and "\n" not in message
    assert "list each GPU once" in message
    # a job (the launcher chosen in a config file) gets the same refusal, at once, claiming nothing
    monkeypatch.setattr(gpu_slots, "nvidia_smi_devices", lambda: DEVICES)
    with pytest.raises(gpu_slots.GpuListError, match="twice"):
        gpu_slots.claim_gpu({**env, "CTRBENCH_SLOT_DIR": str(tmp_path)}, exit_with_parent=False)
    assert gpu_slots.held_slot() is None and list(tmp_path.iterdir()) == []


def test_distinct_gpus_pass_and_mapping_is_asked_only_for_uuids(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = []
    monkeypatch.setattr(gpu_slots, "nvidia_smi_devices", lambda: asked.append(1) or DEVICES)
    check_args(["-m", "hydra/launcher=gpus"], env={"CTRBENCH_GPUS": "0,1"})
    assert asked == []  # plain indices: no nvidia-smi call before launch
    check_args(["-m", "hydra/launcher=gpus"], env={"CUDA_VISIBLE_DEVICES": "0,GPU-77e2"})
    assert asked == [1]
    check_args(["-m", "model=lr,base"], env={"CTRBENCH_GPUS": "0,0"})  # other launchers: no slots
    # a UUID entry's slot is its index's slot, so '0' in one sweep and GPU 0's UUID in another contend
    assert gpu_slots.gpu_key("GPU-5D5BA0D6", DEVICES) == gpu_slots.gpu_key("0", DEVICES) == "0"
    assert gpu_slots.gpu_key("GPU-5d5b", []) == "gpu-5d5b"  # mapping unknown: the UUID itself
    listing = (
        "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a9e)\n"
        "GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-77e2c1aa-0b1c-4d4e-8f00-123456789abc)\n"
        "  MIG 1g.10gb     Device  0: (UUID: MIG-c6d4f1ef-42e4-5de3-91c7-45d71c87eb3f)\n"
    )
    assert gpu_slots.parse_devices(listing) == DEVICES


def test_duplicate_gpus_fail_the_command_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CTRBENCH_GPUS", "0,0")
    monkeypatch.setenv("CTRBENCH_SLOT_DIR", str(tmp_path / "slots"))
    sweep = tmp_path / "sweep"
    start = time.monotonic()
    proc = run_cli(["-m", "hydra/launcher=gpus", *TINY, "model=lr", f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [
        "ctrbench: error: CTRBENCH_GPUS=0,0 names GPU 0 twice (entries 1 and 2): hydra/launcher=gpus makes "
        "one slot per listed GPU, so two jobs would share it; list each GPU once (by index or by UUID)"
    ]
    assert not sweep.exists() and not (tmp_path / "slots").exists()
    assert time.monotonic() - start < 60  # no slot timeout waited


# ---- one slot folder for the machine ----------------------------------------------------------------
@pytest.fixture
def fake_gpu() -> Iterator[str]:
    """A GPU id of its own, so the machine-wide folder's real slots are never touched; its lock file
    is removed afterwards."""
    gpu = f"ctrbench-test-{uuid.uuid4().hex[:12]}"
    yield gpu
    (gpu_slots.DEFAULT_SLOT_DIR / f"gpu{gpu}.lock").unlink(missing_ok=True)


def test_sweeps_with_different_tmpdirs_share_the_slots(tmp_path: Path, fake_gpu: str) -> None:
    import stat

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = _holder(_env(CTRBENCH_GPUS=fake_gpu, TMPDIR=str(tmp_path / "a")))
    try:
        assert first.stdout is not None
        word, pid, path = first.stdout.readline().split()
        assert word == "held"
        second = _claim_and_release(_env(CTRBENCH_GPUS=fake_gpu, TMPDIR=str(tmp_path / "b")))
        assert second.returncode == 3, second.stdout + second.stderr  # it saw the first one's claim
        assert second.stdout.startswith("NoFreeSlot") and f"pid {pid} " in second.stdout  # names the holder
        assert Path(path) == gpu_slots.DEFAULT_SLOT_DIR / f"gpu{fake_gpu}.lock"
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o666  # any user can open it
        assert stat.S_IMODE(os.stat(gpu_slots.DEFAULT_SLOT_DIR).st_mode) & 0o1777 == 0o1777
    finally:
        _end(first)
    again = _claim_and_release(_env(CTRBENCH_GPUS=fake_gpu, TMPDIR=str(tmp_path / "b")))
    assert again.returncode == 0 and again.stdout.startswith("held "), again.stdout + again.stderr
    # the slot folder follows neither $TMPDIR nor tempfile, only the explicit override
    assert gpu_slots.slot_dir({"TMPDIR": str(tmp_path)}) == gpu_slots.DEFAULT_SLOT_DIR
    assert gpu_slots.slot_dir({"CTRBENCH_SLOT_DIR": str(tmp_path)}) == tmp_path
