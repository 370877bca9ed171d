"""``act=prelu``: the activation both papers' MLPs use by default (DIN eq. 8)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ctrbench.nn.activation import PReLU


@dataclass
class PReLUConfig:
    init: float = 0.25  # initial negative slope
    shared: bool = False  # one slope for all units instead of one per unit


class PReLUFactory:
    Config = PReLUConfig

    def __init__(self, config: PReLUConfig) -> None:
        self.config = config

    def __call__(self, width: int, ndim: int = 2) -> nn.Module:
        return PReLU(width, init=self.config.init, shared=self.config.shared)
