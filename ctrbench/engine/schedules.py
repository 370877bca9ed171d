"""Learning-rate schedules (``optim.scheduler``), built on ``torch.optim.lr_scheduler``.

- ``none`` (default): the rate stays ``optim.lr``,
- ``step``: the rate is multiplied by ``gamma`` at each of ``milestones`` (MultiStepLR),
- ``exponential``: the rate is multiplied by ``gamma`` after every interval (ExponentialLR).

``interval`` says what the schedule counts: optimizer ``step``s or ``epoch``s. Lightning steps the
scheduler and saves its state with the checkpoint, so a resumed job continues the schedule.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.optim.lr_scheduler import ExponentialLR, LRScheduler, MultiStepLR

INTERVALS = ("step", "epoch")


@dataclass
class SchedulerConfig:
    """``optim.scheduler``: which schedule, what it counts and its parameters."""

    name: str = "none"
    interval: str = "epoch"
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1

    def __post_init__(self) -> None:
        if self.name not in SCHEDULERS:
            allowed = ", ".join(SCHEDULERS)
            raise ValueError(f"optim.scheduler.name={self.name!r} is invalid: choose one of {allowed}")
        if self.interval not in INTERVALS:
            raise ValueError(
                f"optim.scheduler.interval={self.interval!r} is invalid: choose one of {', '.join(INTERVALS)}"
            )
        if isinstance(self.milestones, int | str) or not all(
            isinstance(m, int) and not isinstance(m, bool) and m > 0 for m in self.milestones
        ):
            raise ValueError(
                f"optim.scheduler.milestones={self.milestones!r} is invalid: a list of positive integers, "
                "e.g. [1000,2000]"
            )
        if isinstance(self.gamma, bool) or not isinstance(self.gamma, int | float) or self.gamma <= 0:
            raise ValueError(f"optim.scheduler.gamma={self.gamma!r} is invalid: a number above 0")

    @property
    def active(self) -> bool:
        """Whether the rate changes during training (any schedule but ``none``)."""
        return SCHEDULERS[self.name] is not None

    @classmethod
    def parse(cls, node: Any) -> SchedulerConfig:
        """From the config node (a mapping, or a bare name); unknown keys are named."""
        if node is None:
            return cls()
        if isinstance(node, SchedulerConfig):
            return node
        if isinstance(node, str):
            return cls(name=node)
        unknown = sorted(set(node) - set(cls.__dataclass_fields__))
        if unknown:
            allowed = ", ".join(cls.__dataclass_fields__)
            raise ValueError(f"optim.scheduler.{unknown[0]} is not an option: choose among {allowed}")
        return cls(**node)


def _step(optimizer: torch.optim.Optimizer, config: SchedulerConfig) -> LRScheduler:
    return MultiStepLR(optimizer, milestones=sorted(config.milestones), gamma=config.gamma)


def _exponential(optimizer: torch.optim.Optimizer, config: SchedulerConfig) -> LRScheduler:
    return ExponentialLR(optimizer, gamma=config.gamma)


SchedulerBuilder = Callable[[torch.optim.Optimizer, SchedulerConfig], LRScheduler]
SCHEDULERS: dict[str, SchedulerBuilder | None] = {"none": None, "step": _step, "exponential": _exponential}


def lightning_scheduler(optimizer: torch.optim.Optimizer, config: SchedulerConfig) -> dict[str, Any] | None:
    """The ``lr_scheduler`` entry of Lightning's ``configure_optimizers`` (None for ``none``)."""
    build = SCHEDULERS[config.name]
    if build is None:
        return None
    return {
        "scheduler": build(optimizer, config),
        "interval": config.interval,
        "frequency": 1,
        "name": "lr_schedule",
    }
