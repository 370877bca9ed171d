"""``reg=l2``: plain ℓ2 over whole embedding tables, every step.

R = λ · Σ_tables ‖W‖²_F (padding row excluded). This is the reference DIN §5.1 argues against:
its cost grows with the vocabulary, because every row is touched at every step even when the
batch holds a handful of ids (compare ``reg=mba``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ctrbench.regularizers.base import Batch, Regularizer
from ctrbench.regularizers.tables import lookup, model_tables, select_tables
from ctrbench.schema import DatasetSplits


@dataclass
class L2Config:
    lam: float = 1e-5  # λ
    tables: list[str] | None = None  # null: the tables of the behaviour sequences


class L2Regularizer(Regularizer):
    Config = L2Config

    def __init__(self, config: L2Config) -> None:
        self.config = config
        self.tables: list[str] = []

    def fit(self, data: DatasetSplits) -> None:
        self.tables = select_tables(data.schema, self.config.tables, "l2")

    def penalty(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        total: torch.Tensor | None = None
        for _, emb in model_tables(model, self.tables, "l2"):
            if emb.sparse:
                # all rows through a sparse lookup, so sparse optimizers still see a sparse gradient
                rows = lookup(emb, torch.arange(1, emb.num_embeddings, device=emb.weight.device))
                term = rows.pow(2).sum()
            else:
                term = emb.weight[1:].pow(2).sum()
            total = term if total is None else total + term
        return self.config.lam * total
