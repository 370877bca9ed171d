"""One rule for the reported epoch and the kept weights (architecture §8).

The epoch whose test numbers a run reports is the epoch whose weights ``checkpoints/best.ckpt``
holds: the best validation GAUC (the earliest on ties), or — when the validation GAUC is undefined
in every epoch (no validation split, or no validation user with both classes) — the last epoch,
recorded as ``selected_by: last_epoch``.

Lightning's ``ModelCheckpoint`` cannot keep that rule: it compares a monitor logged as float32 (two
epochs that differ in float64 can tie there and it keeps the earlier while the float64 choice is the
later), it needs a number in every epoch (an undefined GAUC had to be logged as 0, so epoch 0 was
kept while the last epoch was reported), and it writes ``best-v1.ckpt`` beside an old file. So the
callback below asks :func:`select_epoch` — the function that also picks the reported numbers — and
writes the file atomically (temporary name, then rename).
"""

from __future__ import annotations

import math
import os
import pickle
import shutil
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

SELECT = "val_gauc"  # model selection metric (checkpoint and the val-selected test numbers)
LAST_EPOCH = "last_epoch"
CHECKPOINT_NAME = "best.ckpt"
LAST_NAME = "last.ckpt"  # the latest epoch: what an interrupted job resumes from


class CheckpointError(RuntimeError):
    """The checkpoint of the reported epoch could not be written or does not hold that epoch."""


def _defined(value: Any) -> bool:
    return isinstance(value, int | float) and not math.isnan(value)


def select_epoch(history: Sequence[Mapping[str, Any]], key: str = SELECT) -> tuple[Mapping[str, Any], str]:
    """``(epoch record, rule)``: the epoch with the highest ``key`` (earliest on ties) and ``key``;
    the last epoch and ``"last_epoch"`` when ``key`` is undefined in every epoch."""
    if not history:
        raise ValueError("no epoch to select from")
    scored = [h for h in history if _defined(h.get(key))]
    if not scored:
        return history[-1], LAST_EPOCH
    return max(scored, key=lambda h: h[key]), key  # max() keeps the first of equal values


def selects_latest(history: Sequence[Mapping[str, Any]], key: str = SELECT) -> bool:
    """Whether :func:`select_epoch` picks the latest epoch of ``history`` (so its weights and
    predictions are the ones to keep)."""
    return bool(history) and select_epoch(history, key)[0] is history[-1]


class SelectedCheckpoint(pl.Callback):
    """After every validation epoch: ``dirpath/last.ckpt`` (the state to resume an interrupted job
    from), and ``dirpath/best.ckpt`` when :func:`select_epoch` picks that epoch — the same file,
    hard-linked (copied where links are not possible), so the weights are written once.

    The task's ``history`` (one record per validation epoch, appended in its
    ``on_validation_epoch_end``) is complete when ``on_validation_end`` runs.
    """

    def __init__(self, dirpath: str | Path, key: str = SELECT) -> None:
        self.dirpath = Path(dirpath)
        self.key = key
        self.path = self.dirpath / CHECKPOINT_NAME
        self.last = self.dirpath / LAST_NAME
        self.epoch: int | None = None  # the epoch best.ckpt holds

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        history = getattr(pl_module, "history", [])
        if not history:
            return
        epoch = int(history[-1]["epoch"])
        self.save(trainer, epoch)
        if selects_latest(history, self.key) and trainer.is_global_zero:
            self._publish(epoch)

    def save(self, trainer: pl.Trainer, epoch: int) -> None:
        """Atomically replace ``last.ckpt`` with the current state; one-line error when it fails.

        Every rank calls it (Lightning's ``save_checkpoint`` synchronizes the ranks); rank 0 writes."""
        if trainer.is_global_zero:
            self.dirpath.mkdir(parents=True, exist_ok=True)
        tmp = self.dirpath / f".{LAST_NAME}.tmp-{os.getpid()}"
        try:
            trainer.save_checkpoint(str(tmp), weights_only=False)  # full state: weights and optimizer
            if trainer.is_global_zero:
                os.replace(tmp, self.last)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise CheckpointError(
                f"checkpoint of epoch {epoch + 1} not written to {self.last}: {exc}"
            ) from None

    def _publish(self, epoch: int) -> None:
        """``best.ckpt`` becomes the file ``last.ckpt`` now is (atomically)."""
        tmp = self.dirpath / f".{CHECKPOINT_NAME}.tmp-{os.getpid()}"
        try:
            tmp.unlink(missing_ok=True)
            try:
                os.link(self.last, tmp)
            except OSError:
                shutil.copyfile(self.last, tmp)
            os.replace(tmp, self.path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise CheckpointError(
                f"checkpoint of epoch {epoch + 1} not written to {self.path}: {exc}"
            ) from None
        self.epoch = epoch


def verify_checkpoint(path: Path, epoch: int | None = None) -> int:
    """The epoch a complete checkpoint holds; :class:`CheckpointError` when ``path`` is missing, cut
    short, unreadable as data, or holds another epoch than ``epoch`` (when given).

    A torch checkpoint is a zip archive: every member's CRC is checked, so a file cut short (a full
    disk) is caught before its run is recorded as ``ok``; it is then read once, as data
    (``weights_only=True``), for the epoch it stores.
    """
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} is missing")
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
        stored = None if bad else torch.load(path, map_location="cpu", weights_only=True).get("epoch")
    except (
        OSError,
        zipfile.BadZipFile,
        RuntimeError,
        EOFError,
        AttributeError,
        pickle.UnpicklingError,
    ) as exc:
        raise CheckpointError(f"checkpoint {path} is incomplete or unreadable: {exc}") from None
    if bad is not None:
        raise CheckpointError(f"checkpoint {path} is damaged (member {bad} fails its CRC)")
    if not isinstance(stored, int):
        raise CheckpointError(f"checkpoint {path} names no epoch")
    if epoch is not None and stored != epoch:
        raise CheckpointError(
            f"checkpoint {path} holds epoch {stored + 1}, but epoch {epoch + 1} is reported"
        )
    return stored


PREDICTIONS_NAME = "predictions.npz"


class SelectedPredictions(pl.Callback):
    """Writes ``predictions.npz`` (atomically) whenever :func:`select_epoch` picks a new epoch: the
    reported epoch's predictions, so that any statistic is recomputed later without retraining.

    Arrays per evaluated split (``test_*``, ``val_*``): ``label`` (int8), ``prob`` (float32, the
    sigmoid of the logit), ``group`` (int64, the GAUC group), ``row`` (int64, the row's index in the
    split: evaluation batches run in row order, so two jobs on the same data pair row by row);
    ``epoch`` (int64). On several processes the predictions are every rank's, gathered (rank 0 writes).
    """

    def __init__(self, path: str | Path, key: str = SELECT) -> None:
        self.path = Path(path)
        self.key = key

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        history = getattr(pl_module, "history", [])
        outputs = getattr(pl_module, "epoch_outputs", {})
        if trainer.sanity_checking or not outputs or not trainer.is_global_zero:
            return
        if selects_latest(history, self.key):
            write_predictions(self.path, int(history[-1]["epoch"]), outputs)


def write_predictions(path: Path, epoch: int, outputs: dict[str, tuple[np.ndarray, ...]]) -> None:
    """``outputs[split] = (label, logit, group[, row])``; rows default to 0, 1, ... (row order)."""
    arrays: dict[str, np.ndarray] = {"epoch": np.asarray(epoch, dtype=np.int64)}
    for split, (label, logit, group, *row) in outputs.items():
        logit = np.asarray(logit, dtype=np.float64)
        arrays[f"{split}_label"] = np.asarray(label).astype(np.int8)
        arrays[f"{split}_prob"] = (1.0 / (1.0 + np.exp(-logit))).astype(np.float32)
        arrays[f"{split}_group"] = np.asarray(group).astype(np.int64)
        rows = np.asarray(row[0]) if row else np.arange(len(logit))
        arrays[f"{split}_row"] = rows.astype(np.int64)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.npz")
    try:
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"predictions of epoch {epoch + 1} not written to {path}: {exc}") from None


def read_predictions(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a ``predictions.npz``, read as data (no pickled objects)."""
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def predictions_epoch(path: Path) -> int:
    """The epoch a ``predictions.npz`` holds (only that member is read)."""
    with np.load(path, allow_pickle=False) as npz:
        return int(npz["epoch"])
