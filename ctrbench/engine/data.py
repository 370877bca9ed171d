"""Data module: shuffled index batches over the splits (:class:`ArrayBatches` serves each batch)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Sampler

from ctrbench.engine.batches import ArrayBatches, Batch
from ctrbench.schema import DatasetSplits

__all__ = ["ArrayBatches", "Batch", "CTRDataModule", "IndexBatches"]


class IndexBatches(Sampler[torch.Tensor]):
    """Yields index vectors of ``batch_size``; shuffled with its own seeded generator."""

    def __init__(self, n: int, batch_size: int, shuffle: bool, seed: int = 0) -> None:
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.generator = torch.Generator().manual_seed(seed)
        self.drawn = 0  # epochs' orders drawn so far

    def set_epoch(self, epoch: int) -> None:
        """Lightning calls this before every epoch: a job resumed at epoch k replays the k orders
        drawn before, so it sees the batches an uninterrupted run would have seen."""
        if not self.shuffle or epoch == self.drawn:
            return
        self.generator.manual_seed(self.seed)
        for _ in range(epoch):
            torch.randperm(self.n, generator=self.generator)
        self.drawn = epoch

    def __iter__(self) -> Iterator[torch.Tensor]:
        order = torch.randperm(self.n, generator=self.generator) if self.shuffle else torch.arange(self.n)
        self.drawn += 1
        yield from order.split(self.batch_size)

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)


class CTRDataModule(pl.LightningDataModule):
    """Train batches shuffled per epoch (seeded); validation serves [val, test] so that test
    metrics are computed every epoch next to validation."""

    def __init__(
        self, data: DatasetSplits, batch_size: int, eval_batch_size: int, seed: int, pin_memory: bool = False
    ) -> None:
        super().__init__()
        self.data = data
        self.batch_size, self.eval_batch_size, self.seed = batch_size, eval_batch_size, seed
        self.pin_memory = pin_memory
        self.splits = {
            name: ArrayBatches(getattr(data, name), data.schema, data.sequences)
            for name in ("train", "val", "test")
        }

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        ds = self.splits[split]
        size = self.batch_size if shuffle else self.eval_batch_size
        sampler = IndexBatches(len(ds), size, shuffle, self.seed)
        return DataLoader(ds, sampler=sampler, batch_size=None, pin_memory=self.pin_memory)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def resample(self, epoch: int) -> None:
        """Let the dataset re-draw its per-epoch randomness (the tensors share its arrays' memory)."""
        if self.data.resample is not None:
            self.data.resample(epoch)

    def val_dataloader(self) -> list[DataLoader]:
        return [self._loader("val", shuffle=False), self._loader("test", shuffle=False)]

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
