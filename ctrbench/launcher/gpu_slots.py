"""One GPU per worker process, claimed once for the process's whole life through a lock file.

Used by the ``hydra/launcher=gpus`` preset (the joblib launcher, whose loky workers run many jobs each).
A worker's first job tries ``<slot dir>/gpu<id>.lock`` for every GPU with a non-blocking
``fcntl.flock``; the first lock it gets is kept open until the process exits (the kernel drops it then,
even on a crash), and ``CUDA_VISIBLE_DEVICES`` is set to that one GPU before torch initialises CUDA.
Later jobs in the same process find the claim and keep the same GPU, so two concurrent jobs never share
a GPU and a worker never hops between GPUs. The claim lives in this importable module (and in
``os.environ``), never in ``__main__``, which loky pickles by value.

Which GPUs the slots cover, first match wins:

* ``CTRBENCH_GPUS`` — comma-separated GPU ids (``0,1,3``); empty means no GPU (CPU jobs). It also fakes
  GPUs on a machine without any (tests);
* ``CUDA_VISIBLE_DEVICES`` of the launching shell;
* every ``GPU n:`` line of ``nvidia-smi -L``.

Torch is never asked (``torch.cuda.device_count()`` would initialise CUDA before the choice is made).
The slot folder is ``CTRBENCH_SLOT_DIR``, else ``<tmp>/ctrbench-gpu-slots``: one per machine, so
concurrent sweeps (of any user) share the pool and still never double-book a GPU. A worker that finds
every slot taken polls for ``CTRBENCH_SLOT_TIMEOUT`` seconds (default 300), then fails with one line.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

GPUS_ENV = "CTRBENCH_GPUS"
SLOT_DIR_ENV = "CTRBENCH_SLOT_DIR"
TIMEOUT_ENV = "CTRBENCH_SLOT_TIMEOUT"
SLOT_ENV = "CTRBENCH_GPU_SLOT"  # "<pid>:<gpu id>" of the claim this process holds (for logs and children)
DEFAULT_TIMEOUT_S = 300.0
CPU_THREADS_PER_JOB = 4  # CPU sweeps: default n_jobs gives each job this many threads

__all__ = [
    "NoFreeSlot",
    "Slot",
    "claim_gpu",
    "claim_slot",
    "cpu_count",
    "default_n_jobs",
    "detect_gpus",
    "held_slot",
    "parse_gpus",
    "slot_dir",
    "threads_per_job",
]


class NoFreeSlot(RuntimeError):
    """Every GPU slot stayed locked by other processes for the whole timeout."""


@dataclass(frozen=True)
class Slot:
    """A claimed GPU: its position in the GPU list, its id for ``CUDA_VISIBLE_DEVICES``, its lock file."""

    index: int
    gpu: str
    path: Path
    pid: int


# The claim of this process: (slot, open lock file descriptor). Checked against os.getpid(), because a
# forked child inherits module state (and shares the parent's lock) but owns no slot of its own.
_held: tuple[Slot, int] | None = None


def parse_gpus(value: str) -> list[str]:
    """GPU ids of a ``CUDA_VISIBLE_DEVICES``-style list; like CUDA, stops at the first negative entry."""
    gpus: list[str] = []
    for item in (part.strip() for part in value.split(",")):
        if not item or item.startswith("-") or item.lower() in ("none", "no", "void"):
            break
        gpus.append(item)
    return gpus


def _nvidia_smi_gpus() -> list[str]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [m.group(1) for m in re.finditer(r"^GPU (\d+):", out, flags=re.MULTILINE)]


def detect_gpus(env: Mapping[str, str] | None = None) -> list[str]:
    """The GPU ids slots are made for: ``CTRBENCH_GPUS``, else ``CUDA_VISIBLE_DEVICES``, else nvidia-smi."""
    env = os.environ if env is None else env
    if GPUS_ENV in env:
        return parse_gpus(env[GPUS_ENV])
    if "CUDA_VISIBLE_DEVICES" in env:
        return parse_gpus(env["CUDA_VISIBLE_DEVICES"])
    return _nvidia_smi_gpus()


def cpu_count() -> int:
    """CPU cores this process may run on (its affinity mask where the platform has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def default_n_jobs(n_gpus: int, cores: int) -> int:
    """Parallel jobs by default: one per GPU; without GPUs, one per ``CPU_THREADS_PER_JOB`` cores (>= 1)."""
    if n_gpus > 0:
        return n_gpus
    return max(1, cores // CPU_THREADS_PER_JOB)


def threads_per_job(cores: int, n_jobs: int) -> int:
    """Torch threads for each of ``n_jobs`` concurrent jobs sharing ``cores``: ``cores // n_jobs``, >= 1.

    ``n_jobs`` of -1 (joblib: one job per core) or 0 counts as ``cores``.
    """
    if n_jobs <= 0:
        n_jobs = cores
    return max(1, cores // n_jobs)


def slot_dir(env: Mapping[str, str] | None = None) -> Path:
    """``CTRBENCH_SLOT_DIR``, else one folder per machine under the temporary directory."""
    env = os.environ if env is None else env
    return Path(env.get(SLOT_DIR_ENV) or Path(tempfile.gettempdir()) / "ctrbench-gpu-slots")


def _lock_name(gpu: str) -> str:
    return "gpu" + re.sub(r"[^A-Za-z0-9._-]", "_", gpu) + ".lock"


def _open_lock(path: Path) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except PermissionError:  # another user's lock file: flock works on a read-only descriptor too
        return os.open(path, os.O_RDONLY)


def held_slot() -> Slot | None:
    """The slot this process holds, or None (a forked child holds none of its parent's)."""
    if _held is not None and _held[0].pid == os.getpid():
        return _held[0]
    return None


def claim_slot(gpus: Sequence[str], folder: Path, timeout: float = 0.0, poll: float = 0.25) -> Slot:
    """Claim one of ``gpus`` for this process's lifetime; the same slot again on every later call.

    Pure lock-file logic (no environment, no torch): a lock is taken with a non-blocking
    ``fcntl.flock`` and its file stays open until the process exits. Raises :class:`NoFreeSlot`
    when every slot stays taken for ``timeout`` seconds.
    """
    global _held
    held = held_slot()
    if held is not None:
        return held
    if not gpus:
        raise ValueError("no GPUs to claim a slot for")
    folder.mkdir(parents=True, exist_ok=True)
    try:  # one folder for every user of the machine, like /tmp itself
        os.chmod(folder, 0o1777)
    except OSError:
        pass
    deadline = time.monotonic() + max(0.0, timeout)
    while True:
        for index, gpu in enumerate(gpus):
            path = folder / _lock_name(gpu)
            fd = _open_lock(path)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    continue
                raise
            try:  # who holds it, for a person looking at the folder
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()} {' '.join(sys.argv[:1])}\n".encode())
            except OSError:
                pass
            slot = Slot(index=index, gpu=gpu, path=path, pid=os.getpid())
            _held = (slot, fd)
            return slot
        if time.monotonic() >= deadline:
            raise NoFreeSlot(
                f"no free GPU slot among {', '.join(gpus)} in {folder} after {timeout:.0f} s "
                f"(more parallel jobs than GPUs, or another sweep holds them; {TIMEOUT_ENV} sets the wait)"
            )
        time.sleep(poll)


def claim_gpu(env: Mapping[str, str] | None = None) -> Slot | None:
    """Claim this process's GPU slot from the environment and pin ``CUDA_VISIBLE_DEVICES`` to it.

    Returns None when there are no GPUs (CPU jobs). Idempotent within a process. Also records the full
    GPU list in ``CTRBENCH_GPUS`` so that processes started later from this one see every GPU, not just
    the one this process took. Must run before torch initialises CUDA; refuses otherwise.
    """
    env = os.environ if env is None else env
    gpus = detect_gpus(env)
    if not gpus:
        return None
    held = held_slot()
    if held is not None:
        return held
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        raise RuntimeError("CUDA was initialised before this process claimed its GPU slot")
    timeout = float(env.get(TIMEOUT_ENV) or DEFAULT_TIMEOUT_S)
    slot = claim_slot(gpus, slot_dir(env), timeout=timeout)
    os.environ.setdefault(GPUS_ENV, ",".join(gpus))
    os.environ["CUDA_VISIBLE_DEVICES"] = slot.gpu
    os.environ[SLOT_ENV] = f"{slot.pid}:{slot.gpu}"
    return slot
