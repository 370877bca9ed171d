"""``precise_stats: N``: recompute the evaluation statistics of Dice and BatchNorm layers before
every validation, from ``N`` training batches and the weights being evaluated.

DIN eq. (9) evaluates Dice with E[s] and Var[s] "calculated by moving averages over data"; a
BatchNorm layer does the same. A moving average of decay 0.99 spans the last ~100 training steps,
computed with the weights of those steps. Where an epoch is only a few steps (DIN Table 5's batch of
5000: 80 steps on ``synthetic_goods``) and the pre-activations still move, the averages lag the
weights they are evaluated with: the last Dice layer of a DIN trained so is evaluated with means
4.5 standard deviations away from its inputs' and predicts a click rate of 0.77 where the data has
0.30. Recomputed here, they are the exact average of the batch statistics over a fixed random sample
of the training rows (served as evaluation serves them: the regularizer's ``encode``, never its
training-time ``transform``) with the current weights — "precise BatchNorm" (Wu & Johnson, 2021) for
Dice. ``torch.optim.swa_utils.update_bn`` does this for ``_BatchNorm`` layers only; Dice is not one.

Nothing random is drawn from the global generators (the sample has its own seeded generator, every
other layer stays in evaluation mode): a run without such layers is unchanged bit for bit, and on
several processes every rank computes the same statistics from the same rows.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import move_data_to_device
from torch import nn

from ctrbench.engine.batches import ArrayBatches, Batch
from ctrbench.nn.dice import Dice


def statistics_layers(model: nn.Module) -> list[nn.Module]:
    """The layers whose evaluation mode reads running statistics: Dice and torch's BatchNorm."""
    return [
        m
        for m in model.modules()
        if isinstance(m, Dice) or (isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats)
    ]


def sample_rows(n: int, count: int, seed: int) -> torch.Tensor:
    """A fixed random sample of ``count`` of ``n`` row indices (all of them if fewer), in draw order;
    drawn with a generator of its own."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:count]


def sample_batches(split: ArrayBatches, rows: torch.Tensor, batch_size: int) -> Iterator[Batch]:
    """``rows`` of the split in batches of ``batch_size``, each in row order."""
    for chunk in rows.split(batch_size):
        yield split[chunk.sort().values]


@torch.no_grad()
def recompute_statistics(model: nn.Module, batches: Iterator[Batch], forward) -> int:
    """Reset every statistics layer's running statistics to the cumulative average of its batch
    statistics over ``batches`` (``forward(batch)`` runs the model); returns the batches seen.
    Every module's mode and every layer's momentum are restored afterwards."""
    layers = statistics_layers(model)
    if not layers:
        return 0
    modes = {m: m.training for m in model.modules()}
    momenta = {m: m.momentum for m in layers}
    model.eval()
    for m in layers:
        if isinstance(m, Dice):
            m.running_mean.zero_()
            m.running_var.fill_(1.0)
            m.num_batches_tracked.zero_()
            m.momentum = 0.0  # its step weight max(momentum, 1/t) is then 1/t: the cumulative average
        else:
            m.reset_running_stats()
            m.momentum = None  # BatchNorm's cumulative average
        m.train()
    seen = 0
    try:
        for batch in batches:
            forward(batch)
            seen += 1
    finally:
        for m, momentum in momenta.items():
            m.momentum = momentum
        for m, training in modes.items():
            m.train(training)
    return seen


def precise_stats_batches(value: object) -> int:
    """The config's ``precise_stats``: a number of batches >= 0 (0 or false: off)."""
    if value is False or value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(
            f"precise_stats={value!r} is invalid: the number of training batches to recompute Dice and "
            "BatchNorm statistics from before every validation, an integer >= 0 (0: off)"
        )
    return value


class PreciseStatistics(pl.Callback):
    """Before every validation (not the sanity check): :func:`recompute_statistics` over ``batches``
    evaluation-sized batches of the training split. The checkpoint saved after that validation holds
    the statistics it was evaluated with."""

    def __init__(self, batches: int, seed: int) -> None:
        self.batches, self.seed = batches, seed
        self.rows: torch.Tensor | None = None  # the sample, drawn once (the same every validation)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return

        def forward(batch: Batch) -> None:
            pl_module(move_data_to_device(batch, pl_module.device))

        recompute_statistics(pl_module, self._sample(trainer.datamodule), forward)

    def _sample(self, datamodule: pl.LightningDataModule) -> Iterator[Batch]:
        """The sample's batches; drawn on first use (never for a model without statistics layers)."""
        split, size = datamodule.splits["train"], datamodule.eval_batch_size
        if self.rows is None:
            self.rows = sample_rows(len(split), self.batches * size, self.seed)
        yield from sample_batches(split, self.rows, size)
