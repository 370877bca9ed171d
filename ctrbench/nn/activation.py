"""Activation factories: the contract between activation plugins and model blocks."""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn


class ActivationFactory(Protocol):
    """Given the width of the features (last dimension) and the input rank (2 for (B, W),
    3 for (B, L, W)), return a fresh activation module."""

    def __call__(self, width: int, ndim: int = 2) -> nn.Module: ...


class PReLU(nn.Module):
    """PReLU over the last dimension, f(s) = s if s > 0 else a·s (DIN eq. 8 / He et al. 2015).

    ``torch.nn.PReLU`` puts channels on dim 1, which is wrong for (B, L, W) attention inputs;
    this one applies the slope over the last dimension for any rank, through torch's fused PReLU
    kernel (one pass forward and backward) on the (N, W) view.
    """

    def __init__(self, width: int, init: float = 0.25, shared: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((1 if shared else width,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            return F.prelu(x, self.weight)
        return F.prelu(x.reshape(-1, x.shape[-1]), self.weight).reshape(x.shape)
