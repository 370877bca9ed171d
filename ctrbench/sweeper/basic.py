"""Hydra's basic (grid) sweeper without duplicate jobs: ``hydra/sweeper=basic``, the default sweeper.

:func:`ctrbench.sweeper.plugin.register` stores :class:`BasicSweeperConf` as the ConfigStore node
``hydra/sweeper/basic`` in place of Hydra's own, so the default sweeper and an explicit
``hydra/sweeper=basic`` both get this class; its options are Hydra's (``max_batch_size``, ``params``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper as HydraBasicSweeper
from hydra.core.override_parser.types import Override
from hydra.plugins.sweeper import Sweeper

from ctrbench.engine.interrupt import JobInterrupted
from ctrbench.results.callback import summarize_interrupted
from ctrbench.sweeper.config import BASIC_TARGET
from ctrbench.sweeper.jobs import numbered_subdirs, publish

__all__ = ["BasicSweeper", "BasicSweeperConf", "unique_jobs"]

log = logging.getLogger("ctrbench")


def unique_jobs(jobs: Sequence[Sequence[str]]) -> tuple[list[list[str]], list[list[str]]]:
    """``(kept, dropped)``: each set of overrides once, in first-seen order (``seed=1,1,2`` → two jobs).

    Hydra hands over each value as its parsed value's text (``seed=01`` and ``seed=1`` are both
    ``seed=1``), so equal override sets are equal configurations.
    """
    seen: set[tuple[str, ...]] = set()
    kept: list[list[str]] = []
    dropped: list[list[str]] = []
    for job in jobs:
        key = tuple(sorted(job))
        (dropped if key in seen else kept).append(list(job))
        seen.add(key)
    return kept, dropped


@dataclass
class BasicSweeperConf:
    """``hydra.sweeper.*`` of ``hydra/sweeper=basic``: Hydra's ``BasicSweeperConf`` with ctrbench's class."""

    _target_: str = BASIC_TARGET
    max_batch_size: int | None = None  # jobs launched together (null: all)
    params: dict[str, Any] = field(default_factory=dict)  # sweeps in the config: {key: "a,b"}; the
    # command line joins them (+hydra.sweeper.params.seed=1,2 adds one from the command line)


class BasicSweeper(HydraBasicSweeper):
    """Hydra's ``BasicSweeper`` (the cartesian product of the sweeps, in batches of ``max_batch_size``)
    that runs every distinct combination once and tells the summary which jobs this command ran.

    A combination that repeats an earlier one (``seed=1,1,2``, ``model=din,din``) is dropped before
    launching, and one log line says how many were dropped.
    """

    def __init__(self, max_batch_size: int | None, params: dict[str, Any] | None = None) -> None:
        # Not HydraBasicSweeper.__init__: its ``super(BasicSweeper, self)`` names the class through its
        # module, which Hydra's plugin scan executes a second time (a new class object) when it starts.
        Sweeper.__init__(self)
        self.overrides = None
        self.batch_index = 0
        self.max_batch_size = max_batch_size
        self.params = params or {}
        self.hydra_context = None
        self.config = None
        self.launcher = None

    @staticmethod
    def split_arguments(overrides: list[Override], max_batch_size: int | None) -> list[list[list[str]]]:
        (every,) = HydraBasicSweeper.split_arguments(overrides, None)
        jobs, dropped = unique_jobs(every)
        if dropped:
            shared = set.intersection(*(set(job) for job in every))  # the same in every job: not shown
            shown = "; ".join(" ".join(o for o in job if o not in shared) for job in dropped[:3])
            shown += " ..." if len(dropped) > 3 else ""
            log.info(
                "dropped %d duplicate job%s of %d (the same overrides as an earlier job): %s",
                len(dropped),
                "" if len(dropped) == 1 else "s",
                len(every),
                shown,
            )
        if max_batch_size is None:
            return [jobs]
        return list(HydraBasicSweeper.split_overrides_to_chunks(jobs, max_batch_size))

    def sweep(self, arguments: list[str]) -> Any:
        try:
            returns = super().sweep(arguments)
        except JobInterrupted:
            # SIGTERM/SIGINT: Hydra calls no on_multirun_end; summarize what finished, then exit 128+N
            if self.config is not None:
                summarize_interrupted(self.config, self._planned())
            raise
        assert self.config is not None
        publish(Path(self.config.hydra.sweep.dir), returns)
        return returns

    def _planned(self) -> list[tuple[Path, list[str]]] | None:
        """This command's jobs as (folder, overrides), when folders are job numbers (Hydra's default)."""
        if self.config is None or self.overrides is None or not numbered_subdirs(self.config):
            return None
        every = [job for batch in self.overrides for job in batch]
        root = Path(str(self.config.hydra.sweep.dir))
        return [(root / str(num), list(job)) for num, job in enumerate(every)]
