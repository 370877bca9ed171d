"""Dice, the data adaptive activation function (DIN §5.2, eq. 9)."""

from __future__ import annotations

import torch
from torch import nn


class Dice(nn.Module):
    """DIN eq. (9), per unit (last dimension):

        f(s) = p(s)·s + (1 − p(s))·α·s,   p(s) = sigmoid((s − E[s]) / sqrt(Var[s] + ε))

    α is learned per unit (``alpha_init``). Like BatchNorm without affine parameters: in training
    mode E[s], Var[s] are the mean and (biased) variance of the mini-batch over every leading
    dimension — (B, W) and (B, L, W) inputs alike, the latter normalised as its (B·L, W) flattening —
    and moving averages of them are kept for evaluation mode (DIN: "calculated by moving averages
    over data")::

        running ← (1 − m_t)·running + m_t·batch,   m_t = max(momentum, 1/t)

    at the t-th training batch, with the unbiased batch variance, as ``torch.nn.BatchNorm1d`` does.
    ``m_t = 1/t`` over the first 1/momentum batches makes the running statistics the exact
    cumulative average until the moving average takes over, so the arbitrary (0, 1) initial values
    never leak into evaluation (a plain EMA with momentum 0.01 still holds 37% of them after 100
    steps). A batch with fewer than two rows normalises with its own statistics but does not update
    the running ones.

    There is no mask: ctrbench's attention units pack the valid positions into 2-D before their
    activations, so padded positions never reach the statistics.
    """

    def __init__(
        self, width: int, eps: float = 1e-8, momentum: float = 0.01, alpha_init: float = 0.0
    ) -> None:
        super().__init__()
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f"Dice momentum must be in (0, 1], got {momentum}")
        self.eps = eps
        self.momentum = momentum
        self.alpha = nn.Parameter(torch.full((width,), float(alpha_init)))
        self.register_buffer("running_mean", torch.zeros(width))
        self.register_buffer("running_var", torch.ones(width))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() == 0:
            return x
        if self.training:
            flat = x.reshape(-1, x.shape[-1])
            var, mean = torch.var_mean(flat, dim=0, correction=0)
            n = flat.shape[0]
            if n > 1:
                self._track(mean.detach(), var.detach() * (n / (n - 1)))
        else:
            mean, var = self.running_mean, self.running_var
        p = torch.sigmoid((x - mean) * torch.rsqrt(var + self.eps))
        return x * (p + (1.0 - p) * self.alpha)

    @torch.no_grad()
    def _track(self, mean: torch.Tensor, unbiased_var: torch.Tensor) -> None:
        self.num_batches_tracked += 1
        dtype = self.running_mean.dtype
        m = self.num_batches_tracked.to(dtype).reciprocal().clamp(min=self.momentum)  # no host sync
        self.running_mean.lerp_(mean.to(dtype), m)
        self.running_var.lerp_(unbiased_var.to(dtype), m)

    def extra_repr(self) -> str:
        return f"{self.alpha.numel()}, eps={self.eps}, momentum={self.momentum}"
