"""One GPU per worker process, claimed once for the process's whole life through a lock file.

Used by the ``hydra/launcher=gpus`` preset (the joblib launcher, whose loky workers run many jobs each).
A worker's first job tries ``<slot dir>/gpu<id>.lock`` for every GPU with a non-blocking
``fcntl.flock``; the first lock it gets is kept open until the process exits (the kernel drops it then,
even on a crash or ``kill -9``), and ``CUDA_VISIBLE_DEVICES`` is set to that one GPU before torch
initialises CUDA. Later jobs in the same process find the claim and keep the same GPU, so two concurrent
jobs never share a GPU and a worker never hops between GPUs. The claim lives in this importable module
(and in ``os.environ``), never in ``__main__``, which loky pickles by value.

Which GPUs the slots cover, first match wins:

* ``CTRBENCH_GPUS`` — comma-separated GPU ids (``0,1,3``, or UUIDs ``GPU-…``); empty means no GPU (CPU
  jobs). It also fakes GPUs on a machine without any (tests);
* ``CUDA_VISIBLE_DEVICES`` of the launching shell;
* every ``GPU n:`` line of ``nvidia-smi -L``.

A list that names one GPU twice (``0,0``; or ``0`` and GPU 0's UUID, when ``nvidia-smi -L`` gives the
mapping) is refused: two slots for one GPU would put two jobs on it. Torch is never asked
(``torch.cuda.device_count()`` would initialise CUDA before the choice is made).

Slot rules:

* The slot folder is ``CTRBENCH_SLOT_DIR``, else the fixed ``/tmp/ctrbench-gpu-slots`` — never under
  ``$TMPDIR``, which is often per user or per job, so that every sweep of every user of the machine
  shares one pool. The folder is made mode 1777 (like ``/tmp``) and lock files mode 0666. A slot is
  named after the GPU's index (a UUID entry is mapped to its index through ``nvidia-smi -L``).
* A lock is held only while its holder lives: the kernel drops an ``flock`` when the last descriptor of
  the file closes. The descriptor is closed in forked children (DataLoader workers), so only the
  claiming process can keep a slot; the pid written into the file is for people, never consulted.
* A worker process (one started by loky / multiprocessing) exits once the process that started it is
  gone (its parent pid changes): within ``PARENT_POLL_S`` it sends its main thread SIGTERM (a running
  job records itself ``interrupted``), and ``ORPHAN_GRACE_S`` later it ends with ``os._exit`` whatever
  it is doing (say, blocked writing a result nobody reads), so a killed sweep leaves no orphan holding
  a GPU. (Polling ``os.getppid()`` from a daemon thread, rather than ``PR_SET_PDEATHSIG``: the
  signal fires when the *thread* that forked the worker ends, and loky starts workers from helper
  threads too; it is also Linux-only and cannot be set up after the fact by the worker.)
* A worker that finds every slot taken polls for ``CTRBENCH_SLOT_TIMEOUT`` seconds (default 300), then
  fails with one line naming the holders.
"""

from __future__ import annotations

import errno
import fcntl
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

GPUS_ENV = "CTRBENCH_GPUS"
SLOT_DIR_ENV = "CTRBENCH_SLOT_DIR"
TIMEOUT_ENV = "CTRBENCH_SLOT_TIMEOUT"
SLOT_ENV = "CTRBENCH_GPU_SLOT"  # "<pid>:<gpu id>" of the claim this process holds (for logs and children)
DEFAULT_SLOT_DIR = Path("/tmp/ctrbench-gpu-slots")  # fixed: the same for every user, whatever $TMPDIR
DEFAULT_TIMEOUT_S = 300.0
PARENT_POLL_S = 1.0  # an orphaned worker exits within about this long
ORPHAN_EXIT_CODE = 1
ORPHAN_GRACE_S = 3.0  # an orphaned worker's running job gets this long to record itself interrupted
TOUCH_EVERY_S = 3600.0  # a held lock file's mtime is refreshed this often (age-based /tmp cleaners)
CPU_THREADS_PER_JOB = 4  # CPU sweeps: default n_jobs gives each job this many threads

__all__ = [
    "DEFAULT_SLOT_DIR",
    "GpuListError",
    "NoFreeSlot",
    "Slot",
    "SlotFolderError",
    "claim_gpu",
    "claim_slot",
    "cpu_count",
    "default_n_jobs",
    "detect_gpus",
    "duplicate_gpu_problem",
    "gpu_key",
    "gpu_list_problem",
    "held_slot",
    "parse_devices",
    "parse_gpus",
    "slot_dir",
    "threads_per_job",
    "watch_parent",
]


class NoFreeSlot(RuntimeError):
    """Every GPU slot stayed locked by other processes for the whole timeout."""


class GpuListError(ValueError):
    """The GPU list names one GPU twice; the message is one line."""


class SlotFolderError(RuntimeError):
    """The slot folder or a lock file in it cannot be used; the message is one line."""


@dataclass(frozen=True)
class Slot:
    """A claimed GPU: its position in the GPU list, its id for ``CUDA_VISIBLE_DEVICES``, its lock file."""

    index: int
    gpu: str
    path: Path
    pid: int


# The claim of this process: (slot, open lock file descriptor). Checked against os.getpid(), because a
# forked child inherits module state (its copy of the descriptor is closed at fork, see below).
_held: tuple[Slot, int] | None = None
_watched_by: int | None = None  # pid of the process whose parent watch thread runs


def _forget_in_child() -> None:
    """After ``fork``: close the inherited lock descriptor, so that only the claiming process holds the
    slot (an flock lives until *every* descriptor of the file is closed; closing one copy never unlocks)."""
    global _held
    if _held is not None and _held[0].pid != os.getpid():
        try:
            os.close(_held[1])
        except OSError:
            pass
        _held = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


# ---- the GPU list ------------------------------------------------------------------------------------
def parse_gpus(value: str) -> list[str]:
    """GPU ids of a ``CUDA_VISIBLE_DEVICES``-style list; like CUDA, stops at the first negative entry."""
    gpus: list[str] = []
    for item in (part.strip() for part in value.split(",")):
        if not item or item.startswith("-") or item.lower() in ("none", "no", "void"):
            break
        gpus.append(item)
    return gpus


def _nvidia_smi_listing() -> str:
    """The text of ``nvidia-smi -L``; empty when there is no nvidia-smi or it fails."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return ""
    try:
        return subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def parse_devices(listing: str) -> list[tuple[str, str]]:
    """``(index, UUID)`` of every ``GPU <index>: <name> (UUID: GPU-…)`` line of ``nvidia-smi -L``."""
    pattern = r"^GPU (\d+):[^\n]*?\(UUID: ((?:GPU|MIG)-[^)\s]+)\)"
    return [(m.group(1), m.group(2)) for m in re.finditer(pattern, listing, flags=re.MULTILINE)]


def nvidia_smi_devices() -> list[tuple[str, str]]:
    """``(index, UUID)`` of this machine's GPUs per ``nvidia-smi -L``; empty without nvidia-smi."""
    return parse_devices(_nvidia_smi_listing())


def _nvidia_smi_gpus() -> list[str]:
    listing = _nvidia_smi_listing()
    return [m.group(1) for m in re.finditer(r"^GPU (\d+):", listing, flags=re.MULTILINE)]


def gpu_source(env: Mapping[str, str] | None = None) -> tuple[str, str]:
    """Where the GPU list comes from: ``(variable, value)``, or ``("nvidia-smi -L", "")``."""
    env = os.environ if env is None else env
    for name in (GPUS_ENV, "CUDA_VISIBLE_DEVICES"):
        if name in env:
            return name, env[name]
    return "nvidia-smi -L", ""


def detect_gpus(env: Mapping[str, str] | None = None) -> list[str]:
    """The GPU ids slots are made for: ``CTRBENCH_GPUS``, else ``CUDA_VISIBLE_DEVICES``, else nvidia-smi."""
    source, value = gpu_source(env)
    return _nvidia_smi_gpus() if source == "nvidia-smi -L" else parse_gpus(value)


def _is_uuid(gpu: str) -> bool:
    return gpu[:4].upper() in ("GPU-", "MIG-")


def gpu_key(gpu: str, devices: Sequence[tuple[str, str]] = ()) -> str:
    """The GPU an id names, as the slot is keyed: an index as a plain number; a UUID (or a unique UUID
    prefix, as CUDA accepts) as the index ``devices`` (``nvidia-smi -L``) gives it, else lower-cased."""
    if gpu.isdigit():
        return str(int(gpu))
    if _is_uuid(gpu):
        matches = [index for index, uuid in devices if uuid.lower().startswith(gpu.lower())]
        return matches[0] if len(matches) == 1 else gpu.lower()
    return gpu


def _same_gpu(a: str, b: str, devices: Sequence[tuple[str, str]]) -> bool:
    if gpu_key(a, devices) == gpu_key(b, devices):
        return True
    a, b = a.lower(), b.lower()  # two spellings of one UUID, one a prefix of the other
    return _is_uuid(a) and _is_uuid(b) and (a.startswith(b) or b.startswith(a))


def _needs_devices(gpus: Sequence[str]) -> bool:
    """Whether keying ``gpus`` needs nvidia-smi's index/UUID mapping (some entry is a UUID)."""
    return any(_is_uuid(gpu) for gpu in gpus)


def duplicate_gpu_problem(
    gpus: Sequence[str], devices: Sequence[tuple[str, str]] = (), source: str = GPUS_ENV
) -> str | None:
    """One line when ``gpus`` names one GPU twice (by the same id, or by index and UUID per ``devices``),
    else None."""
    for j, later in enumerate(gpus):
        for i, earlier in enumerate(gpus[:j]):
            if not _same_gpu(earlier, later, devices):
                continue
            key = gpu_key(earlier, devices)
            label = key if key.isdigit() else earlier
            spelled = "" if earlier == later else f", as '{earlier}' and as '{later}'"
            mapped = f"; nvidia-smi -L gives it index {key}" if earlier.isdigit() != later.isdigit() else ""
            return (
                f"{source}={','.join(gpus)} names GPU {label} twice{spelled} (entries {i + 1} and {j + 1}"
                f"{mapped}): "
                "hydra/launcher=gpus makes one slot per listed GPU, so two jobs would share it; "
                "list each GPU once (by index or by UUID)"
            )
    return None


def gpu_list_problem(
    env: Mapping[str, str] | None = None, devices: Sequence[tuple[str, str]] | None = None
) -> str | None:
    """One line when the GPU list (``CTRBENCH_GPUS`` / ``CUDA_VISIBLE_DEVICES``) names a GPU twice, else None.

    ``devices`` is nvidia-smi's ``(index, UUID)`` list; asked for only when the list has a UUID in it.
    """
    source, value = gpu_source(env)
    if source == "nvidia-smi -L":
        return None
    gpus = parse_gpus(value)
    if devices is None:
        devices = nvidia_smi_devices() if _needs_devices(gpus) and len(gpus) > 1 else []
    return duplicate_gpu_problem(gpus, devices, source)


# ---- job counts --------------------------------------------------------------------------------------
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


# ---- slot files --------------------------------------------------------------------------------------
def slot_dir(env: Mapping[str, str] | None = None) -> Path:
    """``CTRBENCH_SLOT_DIR``, else :data:`DEFAULT_SLOT_DIR` (one per machine; ``$TMPDIR`` plays no part)."""
    env = os.environ if env is None else env
    return Path(env.get(SLOT_DIR_ENV) or DEFAULT_SLOT_DIR)


def _lock_name(key: str) -> str:
    return "gpu" + re.sub(r"[^A-Za-z0-9._-]", "_", key) + ".lock"


def _folder_problem(folder: Path, what: str) -> SlotFolderError:
    return SlotFolderError(
        f"GPU slot folder {folder}: {what}; every user of the machine must be able to create lock files "
        f"there (mode 1777, like /tmp), or set {SLOT_DIR_ENV} to a folder that all of them share"
    )


def _make_shared_folder(folder: Path) -> None:
    """Create ``folder`` with mode 1777 in one step (made aside, then renamed into place), so that no other
    user ever sees it with this user's umask."""
    if folder.is_dir():
        try:  # made by this user without the shared mode (an interrupted creation, an older layout)
            info = os.stat(folder)
            if info.st_uid == os.geteuid() and info.st_mode & 0o1777 != 0o1777:
                os.chmod(folder, 0o1777)
        except OSError:
            pass
        return
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        aside = tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent)
    except OSError as exc:
        raise _folder_problem(folder, f"cannot be created ({exc.strerror})") from exc
    os.chmod(aside, 0o1777)
    try:
        os.rename(aside, folder)
    except OSError:  # made by another process meanwhile
        os.rmdir(aside)
    if not folder.is_dir():
        raise _folder_problem(folder, "exists and is not a folder")


def _open_lock(path: Path) -> int:
    """A descriptor on the lock file (created mode 0666; never through a symbolic link)."""
    flags = os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | flags, 0o666)
    except PermissionError:  # another user's lock file that is not writable: flock works read-only too
        try:
            return os.open(path, os.O_RDONLY | flags)
        except FileNotFoundError as exc:
            raise _folder_problem(path.parent, "no permission to create lock files") from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _folder_problem(path.parent, f"{path.name} is a symbolic link") from exc
        raise
    try:
        if os.fstat(fd).st_uid == os.geteuid():
            os.fchmod(fd, 0o666)  # the umask took write access from other users
    except OSError:
        pass
    return fd


def _still_linked(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file ``fd`` is open on (not removed and re-created meanwhile)."""
    try:
        here, there = os.fstat(fd), os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _holder(path: Path) -> str:
    """What the holder wrote into a lock file (``pid <n> user <name>``), for messages."""
    try:
        words = path.read_text().split()
    except OSError:
        return "?"
    return f"pid {words[0]} user {words[1]}" if len(words) >= 2 else "?"


def _user() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError):
        return str(os.geteuid())


def held_slot() -> Slot | None:
    """The slot this process holds, or None (a forked child holds none of its parent's)."""
    if _held is not None and _held[0].pid == os.getpid():
        return _held[0]
    return None


def _try_lock(path: Path) -> int | None:
    """The descriptor holding an exclusive flock on ``path``, or None when another process holds it."""
    while True:
        fd = _open_lock(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                return None
            raise
        if _still_linked(fd, path):
            return fd
        os.close(fd)  # the file was removed (a cleaner) after we opened it: lock the one there now


def claim_slot(
    gpus: Sequence[str],
    folder: Path,
    timeout: float = 0.0,
    poll: float = 0.25,
    devices: Sequence[tuple[str, str]] = (),
) -> Slot:
    """Claim one of ``gpus`` for this process's lifetime; the same slot again on every later call.

    Pure lock-file logic (no environment, no torch): a lock is taken with a non-blocking
    ``fcntl.flock`` and its file stays open until the process exits. ``devices`` (nvidia-smi's
    ``(index, UUID)`` list) names a UUID entry's lock after its index. Raises :class:`NoFreeSlot`
    when every slot stays taken for ``timeout`` seconds.
    """
    global _held
    held = held_slot()
    if held is not None:
        return held
    if not gpus:
        raise ValueError("no GPUs to claim a slot for")
    _make_shared_folder(folder)
    paths = [folder / _lock_name(gpu_key(gpu, devices)) for gpu in gpus]
    deadline = time.monotonic() + max(0.0, timeout)
    while True:
        for index, (gpu, path) in enumerate(zip(gpus, paths, strict=True)):
            fd = _try_lock(path)
            if fd is None:
                continue
            try:  # who holds it, for a person looking at the folder (never read back to decide anything)
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()} {_user()} {' '.join(sys.argv[:1])}\n".encode())
            except OSError:
                pass
            slot = Slot(index=index, gpu=gpu, path=path, pid=os.getpid())
            _held = (slot, fd)
            return slot
        if time.monotonic() >= deadline:
            holders = "; ".join(f"{path.name}: {_holder(path)}" for path in paths)
            raise NoFreeSlot(
                f"no free GPU slot among {', '.join(gpus)} in {folder} after {timeout:.0f} s (held by "
                f"{holders}): more parallel jobs than GPUs, or another sweep holds them; {TIMEOUT_ENV} "
                "sets the wait"
            )
        time.sleep(poll)


# ---- orphaned workers --------------------------------------------------------------------------------
def _say(message: str) -> None:
    """Write one line to stderr without ever blocking the caller for long (a full or dead pipe)."""

    def write() -> None:
        try:
            os.write(2, message.encode())
        except OSError:
            pass

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    writer.join(0.5)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def _orphaned(ppid: int, parent: int) -> bool:
    """Re-parented (to init or a subreaper), or the launching process no longer exists."""
    return os.getppid() != ppid or not _alive(parent)


def _exit_orphan(parent: int, grace: float = 0.0) -> None:
    """Say why, give a running job ``grace`` seconds to record itself interrupted (SIGTERM to the main
    thread, which also breaks a blocking system call), then end the process whatever it is doing."""
    slot = held_slot()
    released = f", releasing GPU slot {slot.path}" if slot else ""
    pid = os.getpid()
    _say(f"ctrbench: worker pid {pid}: its launching process (pid {parent}) is gone; exiting{released}\n")
    if grace > 0 and threading.current_thread() is not threading.main_thread():
        try:
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGTERM)
        except (OSError, ValueError, AttributeError):
            pass
        time.sleep(grace)
    os._exit(ORPHAN_EXIT_CODE)


def _watch(ppid: int, parent: int, poll: float) -> None:
    last_touch = time.monotonic()
    while True:
        if _orphaned(ppid, parent):
            _exit_orphan(parent, ORPHAN_GRACE_S)
        if _held is not None and time.monotonic() - last_touch >= TOUCH_EVERY_S:
            last_touch = time.monotonic()
            try:  # keeps an age-based cleaner of /tmp from removing a held lock file
                os.utime(_held[1])
            except OSError:
                pass
        time.sleep(poll)


def _launching_parent() -> int | None:
    """The pid of the process that started this one as a worker (loky, multiprocessing), else None."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return None
    return parent.pid if parent.pid is not None else os.getppid()


def watch_parent(parent: int | None = None, poll: float = PARENT_POLL_S) -> bool:
    """Exit this process (``os._exit``) within ``poll`` seconds once ``parent`` is gone.

    ``parent`` defaults to the process that started this one through loky / multiprocessing; a process
    started otherwise (the command's own process) is never watched. Gone means: this process was
    re-parented (its parent pid changed; also covers a forkserver between the two), or ``parent`` no
    longer exists. Checks once now (a parent that died before this call), then from a daemon thread,
    once per process. Returns whether a watch runs.
    """
    global _watched_by
    if _watched_by == os.getpid():
        return True
    parent = _launching_parent() if parent is None else parent
    if parent is None:
        return False
    if not _alive(parent):
        _exit_orphan(parent)
    thread = threading.Thread(
        target=_watch, args=(os.getppid(), parent, poll), name="ctrbench-parent-watch", daemon=True
    )
    thread.start()
    _watched_by = os.getpid()
    return True


def claim_gpu(env: Mapping[str, str] | None = None, exit_with_parent: bool = True) -> Slot | None:
    """Claim this process's GPU slot from the environment and pin ``CUDA_VISIBLE_DEVICES`` to it.

    Returns None when there are no GPUs (CPU jobs). Idempotent within a process. Also records the full
    GPU list in ``CTRBENCH_GPUS`` so that processes started later from this one see every GPU, not just
    the one this process took. Must run before torch initialises CUDA; refuses otherwise. A GPU list
    that names a GPU twice raises :class:`GpuListError`. With ``exit_with_parent``, a worker process
    (started by loky / multiprocessing) exits once its launching process is gone (:func:`watch_parent`),
    with or without a GPU.
    """
    env = os.environ if env is None else env
    if exit_with_parent:
        watch_parent()
    source, _ = gpu_source(env)
    gpus = detect_gpus(env)
    if not gpus:
        return None
    held = held_slot()
    if held is not None:
        return held
    devices = nvidia_smi_devices() if _needs_devices(gpus) else []
    problem = duplicate_gpu_problem(gpus, devices, source)
    if problem:
        raise GpuListError(problem)
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        raise RuntimeError("CUDA was initialised before this process claimed its GPU slot")
    timeout = float(env.get(TIMEOUT_ENV) or DEFAULT_TIMEOUT_S)
    slot = claim_slot(gpus, slot_dir(env), timeout=timeout, devices=devices)
    os.environ.setdefault(GPUS_ENV, ",".join(gpus))
    os.environ["CUDA_VISIBLE_DEVICES"] = slot.gpu
    os.environ[SLOT_ENV] = f"{slot.pid}:{slot.gpu}"
    return slot
