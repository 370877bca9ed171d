"""``act=dice``: DIN's data adaptive activation (DIN eq. 9), for every MLP and attention unit."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ctrbench.nn.dice import Dice


@dataclass
class DiceConfig:
    eps: float = 1e-8  # ε in eq. (9), the paper's value
    # Weight of the current batch in the moving averages (torch convention): the paper's moving
    # averages (eq. 9) with decay 0.99. The official codes differ: DIN's Dice normalises in
    # TensorFlow's inference mode (fixed mean 0, variance 1), DIEN's with batch statistics at test
    # time too; ctrbench follows the paper (see the README's paper-vs-official table).
    momentum: float = 0.01
    alpha_init: float = 0.0  # initial α of the (1 − p(s))·α·s channel, per unit


class DiceFactory:
    Config = DiceConfig

    def __init__(self, config: DiceConfig) -> None:
        self.config = config

    def __call__(self, width: int, ndim: int = 2) -> nn.Module:
        # Statistics are taken over every leading dimension, so one module serves any rank.
        c = self.config
        return Dice(width, eps=c.eps, momentum=c.momentum, alpha_init=c.alpha_init)
