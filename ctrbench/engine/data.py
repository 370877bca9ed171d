"""Data module: shuffled index batches over the splits (:class:`ArrayBatches` serves each batch).

On several processes (``trainer.strategy=ddp``) every rank walks the same global batches and takes
its share of each (:class:`RankBatches`; the semantics are in :mod:`ctrbench.engine.distributed`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ctrbench.engine.batches import ArrayBatches, Batch
from ctrbench.engine.distributed import ROW, WEIGHT
from ctrbench.schema import DatasetSplits

__all__ = ["ArrayBatches", "Batch", "CTRDataModule", "IndexBatches", "RankBatches", "RankRows"]


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
            self._permutation()
        self.drawn = epoch

    def _permutation(self) -> torch.Tensor:
        """The epoch's order, held as int32 when the rows allow (the same permutation as int64, half the
        memory: on 10⁷ rows this order is most of what a sweep worker holds beyond the shared arrays)."""
        dtype = torch.int32 if self.n < 2**31 else torch.int64
        return torch.randperm(self.n, generator=self.generator, dtype=dtype)

    def __iter__(self) -> Iterator[torch.Tensor]:
        self.drawn += 1
        if not self.shuffle:  # evaluation: ranges built per batch, no arange over the split
            for start in range(0, self.n, self.batch_size):
                yield torch.arange(start, min(start + self.batch_size, self.n))
            return
        for rows in self._permutation().split(self.batch_size):
            yield rows.long()

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)


class RankBatches(Sampler[tuple[torch.Tensor, float]]):
    """Rank ``rank``'s share of every global batch of ``batches``: rows ``rank::world_size`` of it and
    the loss weight ``world_size · len(share) / len(batch)`` (1.0 when the batch splits evenly). A rank
    whose share is empty (a last batch of fewer rows than ranks) gets the batch's first row with weight
    0, so every rank takes the same number of steps (DDP all-reduces in every one).

    ``set_epoch`` goes to ``batches``: every rank replays the same seeded orders on resume."""

    def __init__(self, batches: IndexBatches, rank: int, world_size: int) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside a world of {world_size} process(es)")
        self.batches, self.rank, self.world_size = batches, rank, world_size

    def set_epoch(self, epoch: int) -> None:
        self.batches.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, float]]:
        for rows in self.batches:
            share = rows[self.rank :: self.world_size]
            if len(share):
                yield share, self.world_size * len(share) / len(rows)
            else:
                yield rows[:1], 0.0

    def __len__(self) -> int:
        return len(self.batches)


class RankRows(Dataset):
    """``ArrayBatches`` for :class:`RankBatches`: the batch of a share's rows, plus their row indices
    in the split (``_row``) and the share's loss weight (``_weight``); the task strips both."""

    def __init__(self, batches: ArrayBatches) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, item: tuple[torch.Tensor, float]) -> Batch:
        rows, weight = item
        batch = dict(self.batches[rows])
        batch[ROW] = rows
        batch[WEIGHT] = torch.tensor(weight, dtype=torch.float32)
        return batch


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

    def ranks(self) -> tuple[int, int]:
        """``(global rank, world size)`` of the trainer this module serves; ``(0, 1)`` without one."""
        trainer = self.trainer
        if trainer is None:
            return 0, 1
        return int(trainer.global_rank), int(trainer.world_size)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        ds = self.splits[split]
        size = self.batch_size if shuffle else self.eval_batch_size
        sampler = IndexBatches(len(ds), size, shuffle, self.seed)
        rank, world = self.ranks()
        if world > 1:  # Lightning adds no DistributedSampler (use_distributed_sampler=False): no double split
            return DataLoader(
                RankRows(ds),
                sampler=RankBatches(sampler, rank, world),
                batch_size=None,
                pin_memory=self.pin_memory,
            )
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
