"""The progress bar counts epochs from 1, as every other text of ctrbench does.

Records keep Lightning's 0-based epoch index (``best_epoch``, each history entry's ``epoch``, the
checkpoint's ``epoch``): what people read — this bar, the log, the summaries, the curves — says
epoch ``k + 1``. Lightning's own bar shows ``Epoch 0/0`` for a one-epoch run; this one ``Epoch 1/1``.
"""

from __future__ import annotations

from pytorch_lightning.callbacks import RichProgressBar


def epoch_description(current_epoch: int, max_epochs: int | None) -> str:
    """``Epoch k+1/max_epochs`` (``Epoch k+1`` when the number of epochs is open: None or -1)."""
    text = f"Epoch {current_epoch + 1}"
    if max_epochs is not None and max_epochs >= 0:
        text += f"/{max_epochs}"
    return text


class EpochProgressBar(RichProgressBar):
    """Lightning's rich progress bar with the training description counted from 1."""

    def _get_train_description(self, current_epoch: int) -> str:
        text = epoch_description(current_epoch, self.trainer.max_epochs)
        width = len(self.validation_description)  # equal widths keep the bar from flickering
        return f"{text:{width}}" if width > len(text) else text
