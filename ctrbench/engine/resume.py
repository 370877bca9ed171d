"""Resume: whether a job folder's earlier run can stand (skip it) or be continued (its last epoch).

A finished job is skipped only when its ``ok`` record has the identical resolved config, the same
fingerprint (data, code, device: :mod:`ctrbench.engine.provenance`) and an intact checkpoint of the
reported epoch; an interrupted (or killed) job continues from its ``checkpoints/last.ckpt`` under
the same conditions. Anything else runs from scratch, and the caller logs why.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ctrbench.engine.provenance import differences
from ctrbench.engine.selection import (
    CHECKPOINT_NAME,
    LAST_NAME,
    CheckpointError,
    verify_checkpoint,
)
from ctrbench.results.record import error_line, read_result, to_json

log = logging.getLogger("ctrbench")


# config keys that say how a run is executed, not what it computes: a record made with another value
# (or before the key existed) still stands
EXECUTION_KEYS = ("threads",)


def _defining(config: Any) -> Any:
    """A record's resolved config without :data:`EXECUTION_KEYS`."""
    if not isinstance(config, dict):
        return config
    return {k: v for k, v in config.items() if k not in EXECUTION_KEYS}


def _same_run(previous: dict[str, Any], cfg: DictConfig, current: dict[str, Any]) -> str:
    """Why ``previous`` was not produced by this config and fingerprint ("" when it was)."""
    if _defining(previous.get("config")) != _defining(to_json(OmegaConf.to_container(cfg, resolve=True))):
        return "the config differs"
    return "; ".join(differences(previous.get("fingerprint"), current))


def finished_record(
    out_dir: Path, cfg: DictConfig, current: dict[str, Any]
) -> tuple[dict[str, Any] | None, str]:
    """``(the ok record in out_dir, "")`` when it was produced by the identical resolved config, the
    same fingerprint and its checkpoint is intact; else ``(None, why it must run)``."""
    previous = read_result(out_dir)
    if previous is None:
        return None, "no result.json"
    if previous.get("status") != "ok":
        return None, f"its record is {previous.get('status')!r}"
    why = _same_run(previous, cfg, current)
    if why:
        return None, why
    if previous.get("checkpoint"):  # the folder's own file: a copied or moved folder names another
        try:
            verify_checkpoint(out_dir / "checkpoints" / CHECKPOINT_NAME, int(previous["best_epoch"]))
        except (CheckpointError, KeyError, TypeError, ValueError) as exc:
            return None, error_line(exc)
    return previous, ""


def resumable(out_dir: Path, cfg: DictConfig, current: dict[str, Any]) -> Path | None:
    """``checkpoints/last.ckpt`` of an interrupted (or killed) run of this very config, data and code,
    when it is intact; None otherwise (the job then starts from scratch)."""
    previous = read_result(out_dir)
    last = out_dir / "checkpoints" / LAST_NAME
    if previous is None or previous.get("status") not in ("interrupted", "running") or not last.is_file():
        return None
    if _same_run(previous, cfg, current):
        return None
    try:
        epoch = verify_checkpoint(last)
    except CheckpointError as exc:
        log.info("not resuming from %s: %s", last, error_line(exc))
        return None
    log.info("resuming %s from %s (after epoch %d)", out_dir, last, epoch + 1)
    return last
