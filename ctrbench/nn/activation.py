"""Activation factories: the contract between activation plugins and model blocks."""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from ctrbench.nn import native


class ActivationFactory(Protocol):
    """Given the width of the features (last dimension) and the input rank (2 for (B, W),
    3 for (B, L, W)), return a fresh activation module."""

    def __call__(self, width: int, ndim: int = 2) -> nn.Module: ...


class PReLU(nn.Module):
    """PReLU over the last dimension, f(s) = s if s > 0 else a·s (DIN eq. 8 / He et al. 2015).

    ``torch.nn.PReLU`` puts channels on dim 1, which is wrong for (B, L, W) attention inputs;
    this one applies the slope over the last dimension for any rank, on the (N, W) view: through
    :class:`NativePReLU` where the compiled kernel runs, else ``torch.nn.functional.prelu``.
    """

    def __init__(self, width: int, init: float = 0.25, shared: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((1 if shared else width,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x if x.dim() == 2 else x.reshape(-1, x.shape[-1])
        if self.weight.numel() == flat.shape[1] and native_prelu_ok(flat, self.weight):
            out = NativePReLU.apply(flat, self.weight)
        else:
            out = F.prelu(flat, self.weight)
        return out if x.dim() == 2 else out.reshape(x.shape)


def native_prelu_ok(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """The compiled PReLU runs on contiguous float32 CPU tensors when the kernel is built."""
    return (
        x.device.type == "cpu"
        and x.dtype == weight.dtype == torch.float32
        and x.is_contiguous()
        and native.kernel() is not None
    )


class NativePReLU(torch.autograd.Function):
    """PReLU of (N, C) rows with a per-channel slope in the compiled kernel (``kernels/prelu.c``):
    torch's CPU backward for this case costs ~10× a pass over the data (measured 3.3 ms for
    10,000 × 80 on two threads); here one pass gives both gradients. Rows are split over torch's
    OpenMP threads from ``THREADED`` numbers per thread on (10,000 × 80 forward + backward on two
    cores: 2.3 ms split vs 3.1 ms whole, after a GEMM as in a training step)."""

    THREADED = 1 << 16

    @staticmethod
    def forward(ctx, x, weight):  # type: ignore[override]
        lib = native.kernel()
        out = torch.empty_like(x)
        n, c = x.shape
        lib.prelu_forward_all(  # type: ignore[union-attr]
            x.data_ptr(), weight.data_ptr(), out.data_ptr(), c, n, native.parts(n, _min_rows(c))
        )
        ctx.save_for_backward(x, weight)
        return out

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        lib = native.kernel()
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        gx = torch.empty_like(x)
        n, c = x.shape
        parts = native.parts(n, _min_rows(c))
        gw = x.new_empty(parts, c)  # one slope gradient per chunk of rows, summed below
        lib.prelu_backward_all(  # type: ignore[union-attr]
            grad.data_ptr(), x.data_ptr(), weight.data_ptr(), gx.data_ptr(), gw.data_ptr(), c, n, parts
        )
        return gx, gw.sum(0)


def _min_rows(width: int) -> int:
    """Rows per thread of the PReLU kernel: whole arrays below NativePReLU.THREADED numbers."""
    return max(1, NativePReLU.THREADED // max(width, 1))
