"""Data module: whole-array batches by index vectors, histories gathered and padded per batch."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ctrbench.schema import DatasetSplits, Schema, Sequences, Split

Batch = dict[str, torch.Tensor]


class ArrayBatches(Dataset):
    """A split held as tensors; ``batches[idx]`` returns the whole batch for an index vector.

    Histories are read from the per-user :class:`Sequences` (stored once) and padded to the
    longest history in the batch (at most ``schema.max_len``), with padding id 0 after the valid
    positions: ``hist[b, :len[b]]`` is the most recent ``len[b]`` behaviours in time order.
    """

    def __init__(self, split: Split, schema: Schema, sequences: Sequences | None) -> None:
        self.schema = schema
        self.columns = {k: torch.as_tensor(v) for k, v in split.columns.items()}
        self.n = len(split)
        seq_fields = schema.of_kind("sequence")
        self.seq_columns: dict[str, torch.Tensor] = {}
        self.length_keys = sorted({f.length for f in seq_fields if f.length})
        if seq_fields:
            if sequences is None or split.seq is None or split.end is None:
                raise ValueError("schema has sequence fields but the dataset provided no sequences/seq/end")
            offsets = torch.as_tensor(sequences.offsets)
            seq = torch.as_tensor(split.seq)
            self.row_start = offsets[seq]
            self.row_end = self.row_start + torch.as_tensor(split.end)
            self.seq_columns = {f.name: torch.as_tensor(sequences.columns[f.name]) for f in seq_fields}

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, idx: torch.Tensor) -> Batch:
        batch = {k: v[idx] for k, v in self.columns.items()}
        if self.seq_columns:
            end = self.row_end[idx]
            length = torch.clamp(end - self.row_start[idx], max=self.schema.max_len)
            width = max(int(length.max()) if len(length) else 1, 1)
            steps = torch.arange(width)
            mask = steps[None, :] < length[:, None]
            pos = torch.where(mask, (end - length)[:, None] + steps[None, :], 0)
            for name, flat in self.seq_columns.items():
                batch[name] = torch.where(mask, flat[pos], 0)
            for key in self.length_keys:
                batch[key] = length
        return batch


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
