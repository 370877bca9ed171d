"""The compiled CPU kernels: GRU-family recurrences (``kernels/recurrence.c``) and PReLU
(``kernels/prelu.c``).

Why C: each recurrence step is a 32×96 matrix-vector product and a few gates per row, far too
small for torch's per-operator dispatch (a GRU step costs ~130 µs in eager torch on one core,
~20 µs of which is arithmetic); ``torch.compile`` and TorchScript were measured no faster, and
torch has no fused CPU kernel for DIEN's attentional cells. The kernel runs each batch row's whole
sequence in one call (valid steps only), rows split over ``torch.get_num_threads()`` OpenMP
threads. Built with ``-fopenmp`` and loaded after torch, the library shares torch's OpenMP
runtime (same ``libgomp.so.1``) and so its thread pool: no extra threads compete with torch's
spinning workers. (Python threads did: on two cores a DIEN step's recurrences ran slower on two
threads than on one.) Without OpenMP support the library is built without it and runs serially.

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
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import torch

SOURCES = [Path(__file__).parent / "kernels" / name for name in ("recurrence.c", "prelu.c")]
FLAGS = ["-O3", "-march=native", "-ffast-math", "-fPIC", "-shared"]
OPENMP = ["-fopenmp"]  # dropped when the compiler lacks it (the kernels then run serially)
ENV_DISABLE = "CTRBENCH_NO_NATIVE"  # set to 1 to force the PyTorch implementation
FALLBACK = "DIEN's recurrences and PReLU run in PyTorch instead (slower, same results)"


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
    try:
        return _compile(compiler, [*FLAGS, *OPENMP])
    except subprocess.CalledProcessError:
        return _compile(compiler, FLAGS)


def _compile(compiler: str, flags: list[str]) -> Path:
    source = b"".join(path.read_bytes() for path in SOURCES)
    key = hashlib.sha256(source + " ".join([compiler, *flags, _cpu_tag()]).encode()).hexdigest()[:16]
    target = cache_dir() / f"ctrbench-{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        out = Path(tmp) / target.name
        subprocess.run(
            [compiler, *flags, *map(str, SOURCES), "-o", str(out), "-lm"],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )
        os.replace(out, target)  # atomic: concurrent jobs never load a half-written file
    return target


_disabled = 0


@contextmanager
def disabled() -> Iterator[None]:
    """Inside, every caller takes its PyTorch path (e.g. so that a trace sees torch operations only)."""
    global _disabled
    _disabled += 1
    try:
        yield
    finally:
        _disabled -= 1


def kernel() -> ctypes.CDLL | None:
    """The loaded kernel library, or None: disabled, or unavailable (then one warning says why)."""
    if _disabled or os.environ.get(ENV_DISABLE):
        return None
    return _load()


@lru_cache(maxsize=1)
def _load() -> ctypes.CDLL | None:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        warnings.warn(f"no C compiler found: {FALLBACK}", stacklevel=2)
        return None
    try:
        lib = ctypes.CDLL(str(_build(compiler)))
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        warnings.warn(
            f"building ctrbench's kernels failed ({detail.strip().splitlines()[-1] if detail else exc}): "
            + FALLBACK,
            stacklevel=2,
        )
        return None
    p, i64 = ctypes.c_void_p, ctypes.c_int64
    c_int = ctypes.c_int
    lib.rec_forward_all.argtypes = [p, p, p, p, p, p, c_int, i64, i64, i64, c_int, p, p, p, p, p]
    lib.rec_backward_all.argtypes = [p, p, p, p, c_int, i64, i64, i64, c_int, *[p] * 8]
    lib.rec_forward_all.restype = lib.rec_backward_all.restype = c_int
    lib.prelu_forward_all.argtypes = [p, p, p, i64, i64, c_int]
    lib.prelu_backward_all.argtypes = [p, p, p, p, p, i64, i64, c_int]
    lib.prelu_forward_all.restype = lib.prelu_backward_all.restype = None
    return lib


def parts(rows: int, min_rows: int = 16) -> int:
    """Threads for ``rows`` rows: torch.get_num_threads(), fewer so that each gets ``min_rows``."""
    return max(1, min(torch.get_num_threads(), rows // min_rows))


def ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()
