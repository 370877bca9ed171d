"""Hydra callback: render the summary tables when a run or a sweep ends."""

from __future__ import annotations

import logging
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from ctrbench.results.record import error_line
from ctrbench.results.tables import render

log = logging.getLogger("ctrbench")

__all__ = ["SummaryCallback"]


class SummaryCallback(Callback):
    """Writes ``summary.csv/md/tex`` into the sweep folder (or the run folder) and prints the table.

    A ``paper`` key in the config (set by the paper presets in ``conf/experiment/``) lays the tables
    out like that table of the paper (:mod:`ctrbench.results.paper`). It never raises: a problem is
    logged as one line, so a finished sweep is never reported as failed.
    """

    def __init__(self, base_model: str = "base") -> None:
        self.base_model = base_model

    def _render(self, folder: Any, config: DictConfig) -> None:
        try:
            if folder is None:
                raise ValueError("no output folder in the Hydra config")
            paper = _select(config, "paper")
            render(str(folder), base_model=self.base_model, paper=paper if isinstance(paper, str) else None)
        except Exception as exc:  # the summary is a convenience; it must not fail the sweep
            log.warning("summary not written for %s: %s", folder, error_line(exc))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Summarize every job of the sweep in ``hydra.sweep.dir``."""
        self._render(_select(config, "hydra.sweep.dir"), config)

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Summarize a single run in its folder: ``hydra.runtime.output_dir``, else ``hydra.run.dir``."""
        folder = _select(config, "hydra.runtime.output_dir") or _select(config, "hydra.run.dir")
        self._render(folder, config)


def _select(config: DictConfig, key: str) -> Any:
    try:
        return OmegaConf.select(config, key, default=None)
    except Exception:  # an unresolvable interpolation counts as missing
        return None
