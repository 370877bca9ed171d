"""MLP with a pluggable activation (the papers' 200-80 tower and the attention units)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ctrbench.nn.activation import ActivationFactory


class MLP(nn.Module):
    """Linear → activation (→ dropout) per hidden width, then a linear output layer.

    ``ndim`` is the rank of the inputs (2 for (B, W), 3 for (B, L, W)), passed to the activation
    factory so stateful activations (Dice) normalise over the right axes.
    """

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int],
        activation: ActivationFactory,
        out_dim: int | None = 1,
        dropout: float = 0.0,
        ndim: int = 2,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_dim
        for h in hidden:
            layers += [nn.Linear(width, h), activation(h, ndim)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        if out_dim is not None:
            layers.append(nn.Linear(width, out_dim))
            width = out_dim
        self.net = nn.Sequential(*layers)
        self.out_dim = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


NORMS = ("none", "batch", "frozen")


class FrozenBatchNorm(nn.Module):
    """Batch normalisation as TensorFlow 1's ``tf.layers.batch_normalization`` runs when its
    ``training`` flag is never set (the official DIN and DIEN code): always in inference mode, with
    moving statistics that stay at their initial mean 0 and variance 1. What is left is a learned
    per-feature affine map, y = γ·x / √(1 + ε) + β (γ = 1, β = 0 at the start, ε = 10⁻³)."""

    def __init__(self, width: int, eps: float = 1e-3) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.bias = nn.Parameter(torch.zeros(width))
        self.scale = 1.0 / math.sqrt(1.0 + eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.bias, x, self.weight * self.scale)


def input_norm(kind: str, width: int, option: str = "input_bn") -> nn.Module:
    """The normalisation of an MLP input: ``none`` (the papers), ``batch`` (``torch.nn.BatchNorm1d``:
    batch statistics in training, running ones at evaluation) or ``frozen``
    (:class:`FrozenBatchNorm`, what the official code runs)."""
    if kind not in NORMS:
        raise ValueError(f"model.{option}={kind!r} is unknown (choices: {', '.join(NORMS)})")
    if kind == "batch":
        return nn.BatchNorm1d(width)
    return FrozenBatchNorm(width) if kind == "frozen" else nn.Identity()


ACTS = ("act", "sigmoid")


def sigmoid(width: int, ndim: int = 2) -> nn.Module:
    """An activation factory giving ``torch.nn.Sigmoid`` (the official code's attention units)."""
    return nn.Sigmoid()


def pick_activation(kind: str, activation: ActivationFactory, option: str) -> ActivationFactory:
    """``act``: the configured activation (the ``act`` group); ``sigmoid``: :func:`sigmoid`."""
    if kind not in ACTS:
        raise ValueError(f"model.{option}={kind!r} is unknown (choices: {', '.join(ACTS)})")
    return activation if kind == "act" else sigmoid
