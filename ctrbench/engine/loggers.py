"""Lightning loggers by config name (``logger=csv``); ``logger=none`` disables logging."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import CSVLogger, Logger


def _csv(options: dict[str, Any], out_dir: Path) -> Logger:
    return CSVLogger(save_dir=str(out_dir), name=options.get("subdir", "csv"), version="")


LOGGERS: dict[str, Callable[[dict[str, Any], Path], Logger | bool]] = {
    "csv": _csv,
    "none": lambda options, out_dir: False,
}


def make_logger(options: dict[str, Any], out_dir: Path) -> Logger | bool:
    name = options.get("name", "csv")
    if name not in LOGGERS:
        raise ValueError(f"unknown logger {name!r} (choices: {', '.join(LOGGERS)})")
    return LOGGERS[name](options, out_dir)
