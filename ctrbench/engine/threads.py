"""Torch's CPU threads for a job: a fixed count, or ``auto`` — as many as the machine has free cores.

torch's OpenMP workers wait for each other at the end of every parallel operator. On cores that
other processes also want, a descheduled worker holds the others at that barrier for a scheduler
time slice, thousands of times per step: on 2 cores with one busy process beside it, a 2-thread DIN
job trained at 1.1k samples/s against 13k with one thread (17k alone). Neither OpenMP's wait policy
(``OMP_WAIT_POLICY=PASSIVE``: 10.7k under load but 9.9k alone) nor a shorter spin
(``GOMP_SPINCOUNT``) avoids that barrier; fewer threads do (``benchmarks/contention.py``).

So with ``threads: auto`` (the default) a job starts with torch's count (the cores it may use, or
what the launcher gave it) and :class:`ThreadGovernor` follows the machine: a few times a second it
counts the runnable tasks that are not this process's (``procs_running`` of ``/proc/stat`` minus
this process's running threads) and uses ``cores - others`` threads, between 1 and the start count:
fewer at once when two samples in a row ask for fewer, more only after a second of free cores.
``threads: N`` fixes N threads (nothing adapts, e.g. for runs whose float rounding must repeat
exactly). Linux only; elsewhere ``auto`` keeps torch's count.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

log = logging.getLogger("ctrbench")

PROC_STAT = Path("/proc/stat")
OWN_TASKS = Path("/proc/self/task")
SAMPLE_EVERY_S = 0.2  # between two looks at the machine's load
FEWER_AFTER = 2  # samples in a row that ask for fewer threads before dropping them
MORE_AFTER = 5  # ... that allow more before adding them back (about a second)


def procs_running(stat: Path = PROC_STAT) -> int | None:
    """Runnable tasks on the machine now (``procs_running`` in ``/proc/stat``), None where unreadable."""
    try:
        for line in stat.read_text().splitlines():
            if line.startswith("procs_running "):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def own_running(tasks: Path = OWN_TASKS) -> int:
    """This process's threads in state R (running or runnable) now."""
    running = 0
    for task in tasks.iterdir():
        try:
            state = (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue  # a thread that ended meanwhile
        running += state == "R"
    return running


def busy_elsewhere() -> int | None:
    """Runnable tasks that are not this process's threads; None where the kernel does not say."""
    total = procs_running()
    if total is None or not OWN_TASKS.is_dir():
        return None
    return max(0, total - own_running())


def wanted(cores: int, others: int, most: int) -> int:
    """Threads for a job allowed ``most`` when ``others`` runnable tasks share ``cores`` cores."""
    return max(1, min(most, cores - others))


class ThreadGovernor(pl.Callback):
    """Keeps torch's thread count at the machine's free cores (see the module docstring)."""

    def __init__(self, most: int, cores: int | None = None, clock=time.monotonic) -> None:
        self.most = most
        self.cores = cores or os.cpu_count() or 1
        self.clock = clock
        self.samples: deque[int] = deque(maxlen=MORE_AFTER)
        self.next_look = 0.0
        self.changes = 0
        self.fewest = most

    def observe(self, others: int) -> int:
        """Record one sample of the load; returns the thread count now in force."""
        self.samples.append(wanted(self.cores, others, self.most))
        current = torch.get_num_threads()
        recent = list(self.samples)
        if len(recent) >= FEWER_AFTER and max(recent[-FEWER_AFTER:]) < current:
            target = max(recent[-FEWER_AFTER:])
        elif len(recent) == MORE_AFTER and min(recent) > current:
            target = min(recent)
        else:
            return current
        torch.set_num_threads(target)
        self.changes += 1
        self.fewest = min(self.fewest, target)
        log.debug("torch threads %d -> %d (%d tasks running elsewhere)", current, target, others)
        return target

    def summary(self) -> dict[str, int]:
        """For the run record: the thread count it started with, the fewest it used, how often it changed."""
        return {"most": self.most, "fewest": self.fewest, "changes": self.changes}

    def look(self) -> None:
        now = self.clock()
        if now < self.next_look:
            return
        self.next_look = now + SAMPLE_EVERY_S
        others = busy_elsewhere()
        if others is not None:
            self.observe(others)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self.look()

    def on_validation_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any
    ) -> None:
        self.look()

    def on_test_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self.look()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        torch.set_num_threads(self.most)  # the next job of this process starts from the full count

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exc: BaseException) -> None:
        torch.set_num_threads(self.most)


def thread_setting(value: Any) -> int | None:
    """``threads`` of the config: a positive count, or None for ``auto``; anything else one line."""
    if value is None or value == "auto":
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"threads={value!r}: expected auto or a positive number of torch threads")
    return value


def apply_threads(value: Any) -> ThreadGovernor | None:
    """Set torch's threads for a job from ``threads``; the governor to add to the trainer for ``auto``
    (None when fixed, or when there is nothing to adapt: one thread, or no ``/proc``)."""
    fixed = thread_setting(value)
    if fixed is not None:
        torch.set_num_threads(fixed)
        return None
    most = torch.get_num_threads()
    if most <= 1 or busy_elsewhere() is None:
        return None
    return ThreadGovernor(most)
