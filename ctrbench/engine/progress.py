"""The progress bar counts epochs from 1, as every other text of ctrbench does, and redraws at most
every :data:`REDRAW_S` seconds.

Records keep Lightning's 0-based epoch index (``best_epoch``, each history entry's ``epoch``, the
checkpoint's ``epoch``): what people read — this bar, the log, the summaries, the curves — says
epoch ``k + 1``. Lightning's own bar shows ``Epoch 0/0`` for a one-epoch run; this one ``Epoch 1/1``.
"""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import RichProgressBar

# Lightning's bar updates its task, collects the metrics and redraws after every batch: ~1 ms, a tenth
# of a DIN step on 2 CPU cores; a person reads it no faster than a few times a second
REDRAW_S = 0.1


def epoch_description(current_epoch: int, max_epochs: int | None) -> str:
    """``Epoch k+1/max_epochs`` (``Epoch k+1`` when the number of epochs is open: None or -1)."""
    text = f"Epoch {current_epoch + 1}"
    if max_epochs is not None and max_epochs >= 0:
        text += f"/{max_epochs}"
    return text


class EpochProgressBar(RichProgressBar):
    """Lightning's rich progress bar with the training description counted from 1, redrawn at most every
    ``redraw_s`` seconds (and at the last batch of each loop)."""

    def __init__(self, *args: Any, redraw_s: float = REDRAW_S, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.redraw_s = redraw_s
        self._drawn = 0.0

    def _due(self, batch_idx: int, total: float | int | None) -> bool:
        now = time.monotonic()
        last = total is not None and batch_idx + 1 >= total
        if last or now - self._drawn >= self.redraw_s:
            self._drawn = now
            return True
        return False

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._due(batch_idx, self.total_train_batches):
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._due(batch_idx, self.total_val_batches_current_dataloader):
            super().on_validation_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)

    def _get_train_description(self, current_epoch: int) -> str:
        text = epoch_description(current_epoch, self.trainer.max_epochs)
        width = len(self.validation_description)  # equal widths keep the bar from flickering
        return f"{text:{width}}" if width > len(text) else text
