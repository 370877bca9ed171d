"""``reg=filter``: frequency filter (DIN §6.5: "leave only the most frequent goods_ids").

Ids are ranked by their number of occurrences n_j in the training set; only the ``top_k`` most
frequent ones with n_j ≥ ``min_count`` keep their own embedding row. Every other id — rare,
or never seen in training — maps to one out-of-vocabulary row (an extra last row of the table),
in training and evaluation alike (the ``encode`` hook), so the model never learns or reads a
per-id row for filtered ids.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from ctrbench.regularizers.base import Batch, Regularizer
from ctrbench.regularizers.counts import id_counts
from ctrbench.regularizers.tables import select_tables
from ctrbench.schema import DatasetSplits, Field, Schema


@dataclass
class FilterConfig:
    top_k: int | None = None  # keep at most this many ids per table (null: no cap)
    min_count: int = 2  # keep only ids seen at least this many times in training
    tables: list[str] | None = None  # null: the tables of the behaviour sequences


class FrequencyFilter(Regularizer):
    Config = FilterConfig

    def __init__(self, config: FilterConfig) -> None:
        if config.top_k is not None and config.top_k < 1:
            raise ValueError(f"reg.top_k={config.top_k} is invalid: must be an integer >= 1 or null")
        if config.min_count < 1:
            raise ValueError(f"reg.min_count={config.min_count} is invalid: must be an integer >= 1")
        self.config = config
        self.keep: dict[str, torch.Tensor] = {}  # table → bool (vocab,), True for ids with their own row
        self.oov: dict[str, int] = {}  # table → the OOV row (= the dataset's vocab of that table)
        self.fields: list[Field] = []

    def fit(self, data: DatasetSplits) -> None:
        tables = select_tables(data.schema, self.config.tables, "filter")
        sizes = data.schema.tables()
        for table, n in id_counts(data, tables).items():
            keep = n >= self.config.min_count
            if self.config.top_k is not None and keep.sum() > self.config.top_k:
                # most frequent first, ties by smaller id (a stable sort)
                ranked = np.argsort(-n, kind="stable")[: self.config.top_k]
                keep = np.zeros_like(keep)
                keep[ranked] = True
                keep &= n >= self.config.min_count
            keep[0] = True  # padding stays padding
            self.keep[table] = torch.as_tensor(keep)
            self.oov[table] = sizes[table]
        self.fields = [f for f in data.schema.fields if f.kind != "dense" and f.table in self.keep]

    def kept(self, table: str) -> int:
        """Number of real ids that keep their own row."""
        return int(self.keep[table].sum()) - 1

    def adapt_schema(self, schema: Schema) -> Schema:
        """One extra row per filtered table: the OOV row."""
        fields = tuple(
            dataclasses.replace(f, vocab=self.oov[f.table] + 1) if f.table in self.oov else f
            for f in schema.fields
        )
        return dataclasses.replace(schema, fields=fields)

    def encode(self, batch: Batch) -> Batch:
        out = dict(batch)
        for f in self.fields:
            if f.name not in out:  # e.g. no sampled negatives when scoring
                continue
            ids = out[f.name]
            keep = self.keep[f.table]
            if keep.device != ids.device:
                keep = self.keep[f.table] = keep.to(ids.device)
            out[f.name] = torch.where(keep[ids], ids, self.oov[f.table])
        return out
