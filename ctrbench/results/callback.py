"""Hydra callback: render the summary tables when a run or a sweep ends."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from ctrbench.engine.provenance import write_environment
from ctrbench.results.record import RESULT_FILE, error_line
from ctrbench.results.tables import render
from ctrbench.sweeper import jobs

log = logging.getLogger("ctrbench")

__all__ = ["SummaryCallback", "summarize_interrupted"]


class SummaryCallback(Callback):
    """Writes ``summary.csv/md/tex`` into the sweep folder (or the run folder) and prints the table.

    A sweep's summary describes the jobs of the command that just ran: ctrbench's sweepers (basic and
    Optuna) publish the folders of the jobs they launched (:mod:`ctrbench.sweeper.jobs`), and the
    ``result.json`` of an earlier command still in ``hydra.sweep.dir`` is left out and listed in a note
    under the table. Under a sweeper that publishes nothing, every record in the folder is summarized
    (as ``ctrbench report`` does), and the log says so.

    A ``paper`` key in the config (set by the paper presets in ``conf/experiment/``) lays the tables
    out like that table of the paper (:mod:`ctrbench.results.paper`). It never raises: a problem is
    logged as one line, so a finished sweep is never reported as failed.
    """

    def __init__(self, base_model: str = "base") -> None:
        self.base_model = base_model

    def _render(
        self,
        folder: Any,
        config: DictConfig,
        dirs: Sequence[Path] | None = None,
        not_run: Sequence[str] = (),
    ) -> None:
        """``render`` the folder (only the jobs in ``dirs`` when given); never raises."""
        try:
            if folder is None:
                raise ValueError("no output folder in the Hydra config")
            paper = _select(config, "paper")
            render(
                str(folder),
                base_model=self.base_model,
                paper=paper if isinstance(paper, str) else None,
                jobs=dirs,
                not_run=not_run,
            )
        except Exception as exc:  # the summary is a convenience; it must not fail the sweep
            log.warning("summary not written for %s: %s", folder, error_line(exc))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Forget jobs published for this sweep folder by an earlier command of this process."""
        folder = _select(config, "hydra.sweep.dir")
        if folder is not None:
            jobs.forget(folder)
            try:
                write_environment(Path(folder))  # the environment's package list, once per sweep folder
            except OSError as exc:
                log.warning("environment.txt not written in %s: %s", folder, error_line(exc))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Summarize the jobs this command's sweeper launched into ``hydra.sweep.dir``."""
        folder = _select(config, "hydra.sweep.dir")
        command = jobs.take(folder) if folder is not None else None
        if command is None and folder is not None:
            log.info("the sweeper did not list its jobs: the summary covers every result.json in %s", folder)
        self._render(folder, config, None if command is None else command.dirs)

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Summarize a single run in its folder: ``hydra.runtime.output_dir``, else ``hydra.run.dir``."""
        folder = _select(config, "hydra.runtime.output_dir") or _select(config, "hydra.run.dir")
        self._render(folder, config)


def _select(config: DictConfig, key: str) -> Any:
    try:
        return OmegaConf.select(config, key, default=None)
    except Exception:  # an unresolvable interpolation counts as missing
        return None


def summarize_interrupted(config: DictConfig, planned: list[tuple[Path, list[str]]] | None) -> None:
    """The summary of an interrupted sweep: what finished, the jobs that were running (their records
    say ``interrupted`` or ``running``) and a note listing those that never started. ``planned``: the
    command's jobs as (folder, overrides), or None when their folders are not known in advance."""
    base = _select(config, "hydra.callbacks.summary.base_model") or "base"
    not_run = [
        f"{path.name} ({' '.join(overrides)})"
        for path, overrides in planned or []
        if not (path / RESULT_FILE).is_file()
    ]
    dirs = None if planned is None else [path for path, _ in planned]
    SummaryCallback(str(base))._render(_select(config, "hydra.sweep.dir"), config, dirs, not_run)
