"""``act=swish``: Swish, f(s) = s · σ(β s) with β learned per unit (Ramachandran et al., 2017)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class SwishConfig:
    beta_init: float = 1.0  # initial β (1.0 = SiLU)


class Swish(nn.Module):
    def __init__(self, width: int, beta_init: float) -> None:
        super().__init__()
        self.beta = nn.Parameter(torch.full((width,), float(beta_init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.beta * x)


class SwishFactory:
    Config = SwishConfig

    def __init__(self, config: SwishConfig) -> None:
        self.config = config

    def __call__(self, width: int, ndim: int = 2) -> nn.Module:
        return Swish(width, self.config.beta_init)
