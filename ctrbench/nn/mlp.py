"""MLP with a pluggable activation (the papers' 200-80 tower and the attention units)."""

from __future__ import annotations

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
