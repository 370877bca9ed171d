"""The compiled CPU kernel of the GRU-family recurrences (``kernels/recurrence.c``).

Why C: each recurrence step is a 32×96 matrix-vector product and a few gates per row, far too
small for torch's per-operator dispatch (a GRU step costs ~130 µs in eager torch on one core,
~20 µs of which is arithmetic); ``torch.compile`` and TorchScript were measured no faster, and
torch has no fused CPU kernel for DIEN's attentional cells. The kernel runs each batch row's whole
sequence in one call (valid steps only), rows split over torch's thread count with Python
threads (ctypes releases the GIL during the call).

It is compiled on first use with the system C compiler (``$CC`` or ``cc``) into the ctrbench
cache (``$CTRBENCH_CACHE`` or ``~/.cache/ctrbench``), keyed by source, flags and CPU, and loaded
with ctypes. :func:`kernel` returns None, after one warning, when no compiler is available or the
build fails; callers then use the PyTorch implementation.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

import torch

SOURCE = Path(__file__).parent / "kernels" / "recurrence.c"
FLAGS = ["-O3", "-march=native", "-ffast-math", "-fPIC", "-shared"]
ENV_DISABLE = "CTRBENCH_NO_NATIVE"  # set to 1 to force the PyTorch implementation


def cache_dir() -> Path:
    return Path(os.environ.get("CTRBENCH_CACHE") or Path.home() / ".cache" / "ctrbench") / "kernels"


def _cpu_tag() -> str:
    """Machine and CPU flags: a kernel built with -march=native is only valid on such a CPU."""
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = line
                break
    except OSError:
        pass
    return f"{platform.machine()} {flags}"


def _build(compiler: str) -> Path:
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + " ".join([compiler, *FLAGS, _cpu_tag()]).encode()).hexdigest()[:16]
    target = cache_dir() / f"recurrence-{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        out = Path(tmp) / target.name
        subprocess.run(
            [compiler, *FLAGS, str(SOURCE), "-o", str(out), "-lm"],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )
        os.replace(out, target)  # atomic: concurrent jobs never load a half-written file
    return target


@lru_cache(maxsize=1)
def kernel() -> ctypes.CDLL | None:
    """The loaded kernel library, or None (PyTorch fallback) with one warning saying why."""
    if os.environ.get(ENV_DISABLE):
        return None
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        warnings.warn("no C compiler found: DIEN's recurrences run in PyTorch (slower)", stacklevel=2)
        return None
    try:
        lib = ctypes.CDLL(str(_build(compiler)))
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        warnings.warn(
            f"building the recurrence kernel failed ({detail.strip().splitlines()[-1] if detail else exc}): "
            "DIEN's recurrences run in PyTorch (slower)",
            stacklevel=2,
        )
        return None
    p, i64 = ctypes.c_void_p, ctypes.c_int64
    lib.rec_forward.argtypes = [p, p, p, p, p, ctypes.c_int, i64, i64, i64, i64, i64, p, p, p, p, p]
    lib.rec_backward.argtypes = [p, p, p, p, ctypes.c_int, i64, i64, i64, i64, i64, *[p] * 8]
    lib.rec_forward.restype = lib.rec_backward.restype = ctypes.c_int
    return lib


_pool: ThreadPoolExecutor | None = None


def run_rows(fn, rows: int) -> None:
    """Call ``fn(row0, row1)`` over [0, rows) split into torch.get_num_threads() chunks, in parallel."""
    global _pool
    parts = max(1, min(torch.get_num_threads(), rows // 16))
    if parts == 1:
        _check(fn(0, rows))
        return
    if _pool is None or _pool._max_workers < parts:
        _pool = ThreadPoolExecutor(max_workers=parts, thread_name_prefix="ctrbench-rec")
    bounds = [rows * i // parts for i in range(parts + 1)]
    for status in _pool.map(fn, bounds[:-1], bounds[1:]):
        _check(status)


def _check(status: int) -> None:
    if status != 0:
        raise RuntimeError("recurrence kernel: hidden size above its limit of 512")


def ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()
