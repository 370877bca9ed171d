"""A split served as whole batches by index vector (histories gathered per batch).

The split's arrays are wrapped, never copied: for a cached dataset they are the cache files'
memory maps, so every process training on it shares one physical copy (the page cache) and a batch
reads only the rows it needs. Whatever is derived per row (where a row's history starts) is
computed per batch, so a process holds no array proportional to the number of rows of its own.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from ctrbench.schema import Schema, Sequences, Split

Batch = dict[str, torch.Tensor]


def shared_tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor over the array's own memory (a memory map stays a memory map); copies only what
    torch cannot wrap (non-native byte order, unsupported dtype)."""
    if isinstance(array, torch.Tensor):
        return array
    return torch.as_tensor(np.asarray(array))


class ArrayBatches(Dataset):
    """A split as tensors over its arrays; ``batches[idx]`` returns the whole batch for an index vector.

    Histories are read from the per-user :class:`Sequences` (stored once) and padded to the
    longest history in the batch (at most ``schema.max_len``), with padding id 0 after the valid
    positions: ``hist[b, :len[b]]`` is the most recent ``len[b]`` behaviours in time order.
    """

    def __init__(self, split: Split, schema: Schema, sequences: Sequences | None) -> None:
        self.schema = schema
        self.columns = {k: shared_tensor(v) for k, v in split.columns.items()}
        self.n = len(split)
        seq_fields = schema.of_kind("sequence")
        self.seq_columns: dict[str, torch.Tensor] = {}
        self.length_keys = sorted({f.length for f in seq_fields if f.length})
        if seq_fields:
            if sequences is None or split.seq is None or split.end is None:
                raise ValueError("schema has sequence fields but the dataset provided no sequences/seq/end")
            self.offsets = shared_tensor(sequences.offsets)
            self.seq = shared_tensor(split.seq)
            self.end = shared_tensor(split.end)
            self.seq_columns = {f.name: shared_tensor(sequences.columns[f.name]) for f in seq_fields}

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, idx: torch.Tensor) -> Batch:
        batch = {k: v[idx] for k, v in self.columns.items()}
        if self.seq_columns:
            start = self.offsets[self.seq[idx]]  # where each row's user sequence starts
            end = start + self.end[idx]
            length = torch.clamp(end - start, max=self.schema.max_len)
            width = max(int(length.max()) if len(length) else 1, 1)
            first = end - length  # the row's history is flat[first : first + length]
            pad = torch.arange(width)[None, :] >= length[:, None]
            for name, flat in self.seq_columns.items():
                batch[name] = histories(flat, first, width).masked_fill_(pad, 0)
            for key in self.length_keys:
                batch[key] = length
        return batch


def histories(flat: torch.Tensor, first: torch.Tensor, width: int) -> torch.Tensor:
    """``out[b] = flat[first[b] : first[b] + width]`` (positions past the array's end read as 0).

    Each row is one contiguous slice, so the rows are copied whole out of a sliding-window view of
    ``flat`` (``index_select``), several times faster than gathering every position on its own.
    """
    n = len(flat)
    if n < width:  # shorter than one window: position by position
        pos = first[:, None] + torch.arange(width)[None, :]
        return torch.where(pos < n, flat[pos.clamp(max=max(n - 1, 0))], 0) if n else torch.zeros_like(pos)
    step = flat.stride(0)
    windows = flat.as_strided((n - width + 1, width), (step, step))
    last = n - width  # the last window's start; a row starting later reads the last window, shifted
    out = windows.index_select(0, torch.clamp(first, max=last))
    late = torch.nonzero(first > last).flatten()
    if len(late):
        pos = first[late, None] + torch.arange(width)[None, :]
        out[late] = torch.where(pos < n, flat[pos.clamp(max=n - 1)], 0)
    return out
