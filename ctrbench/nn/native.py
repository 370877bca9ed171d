"""The compiled CPU kernels: GRU-family recurrences (``kernels/recurrence.c``) and PReLU
(``kernels/prelu.c``).

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
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import torch

SOURCES = [Path(__file__).parent / "kernels" / name for name in ("recurrence.c", "prelu.c")]
FLAGS = ["-O3", "-march=native", "-ffast-math", "-fPIC", "-shared"]
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
    source = b"".join(path.read_bytes() for path in SOURCES)
    key = hashlib.sha256(source + " ".join([compiler, *FLAGS, _cpu_tag()]).encode()).hexdigest()[:16]
    target = cache_dir() / f"ctrbench-{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        out = Path(tmp) / target.name
        subprocess.run(
            [compiler, *FLAGS, *map(str, SOURCES), "-o", str(out), "-lm"],
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
    lib.rec_forward.argtypes = [p, p, p, p, p, ctypes.c_int, i64, i64, i64, i64, i64, p, p, p, p, p]
    lib.rec_backward.argtypes = [p, p, p, p, ctypes.c_int, i64, i64, i64, i64, i64, *[p] * 8]
    lib.rec_forward.restype = lib.rec_backward.restype = ctypes.c_int
    lib.prelu_forward.argtypes = [p, p, p, i64, i64, i64]
    lib.prelu_backward.argtypes = [p, p, p, p, p, i64, i64, i64]
    lib.prelu_forward.restype = lib.prelu_backward.restype = None
    return lib


_pool: ThreadPoolExecutor | None = None


def chunks(rows: int, min_rows: int = 16) -> list[tuple[int, int]]:
    """[0, rows) split into up to torch.get_num_threads() chunks of at least ``min_rows``."""
    parts = max(1, min(torch.get_num_threads(), rows // min_rows))
    bounds = [rows * i // parts for i in range(parts + 1)]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def run_rows(fn, rows: int, min_rows: int = 16) -> list:
    """``fn(row0, row1)`` over the :func:`chunks` of [0, rows), in parallel; their results."""
    global _pool
    parts = chunks(rows, min_rows)
    if len(parts) == 1:
        return [fn(*parts[0])]
    if _pool is None or _pool._max_workers < len(parts):
        _pool = ThreadPoolExecutor(max_workers=len(parts), thread_name_prefix="ctrbench-kernel")
    return list(_pool.map(lambda part: fn(*part), parts))


def ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()
