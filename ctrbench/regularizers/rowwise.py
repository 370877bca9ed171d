"""Penalties over the embedding rows of the ids present in a mini-batch (MBA, DiFacto).

R_m = c · λ · Σ_tables Σ_{j in B_m} ω_mj · ‖w_j‖², with per-row weights ω_mj given by the subclass
from the batch and the training counts n_j, and a constant c (``factor``: ½ for MBA, whose λ is
the one of DIN eq. 7's update rule; 1 for DiFacto). Rows are read through an embedding lookup of the
batch's distinct ids (sparse for sparse tables), so the cost depends on the number of distinct ids
in the batch, never on the vocabulary size.
"""

from __future__ import annotations

import torch
from torch import nn

from ctrbench.regularizers.base import Batch, Regularizer
from ctrbench.regularizers.counts import id_counts
from ctrbench.regularizers.tables import feature_fields, lookup, model_tables, select_tables
from ctrbench.schema import DatasetSplits, Field


class RowPenalty(Regularizer):
    """Subclasses set ``name`` (and ``factor``) and implement :meth:`row_weights`; ``config`` has
    ``lam`` and ``tables``."""

    name = ""
    factor = 1.0  # c in R_m = c·λ·Σ ω_mj‖w_j‖²

    def __init__(self, config) -> None:
        self.config = config
        self.tables: list[str] = []
        self.fields: dict[str, list[Field]] = {}
        self.counts: dict[str, torch.Tensor] = {}  # table → max(n_j, 1), float32 (vocab,)

    def fit(self, data: DatasetSplits) -> None:
        self.tables = select_tables(data.schema, self.config.tables, self.name)
        self.fields = {t: feature_fields(data.schema, t) for t in self.tables}
        for table, n in id_counts(data, self.tables).items():
            self.counts[table] = torch.as_tensor(n, dtype=torch.float32).clamp_(min=1.0)

    def count(self, table: str, device: torch.device) -> torch.Tensor:
        """max(n_j, 1) for every id of ``table``, on ``device`` (moved once)."""
        n = self.counts[table]
        if n.device != device:
            n = self.counts[table] = n.to(device)
        return n

    def row_weights(self, table: str, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(distinct ids j of the batch in ``table``, their weights ω_mj)."""
        raise NotImplementedError

    def penalty(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        total: torch.Tensor | None = None
        weights: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for table, emb in model_tables(model, self.tables, self.name):
            if table not in weights:
                weights[table] = self.row_weights(table, batch)
            ids, omega = weights[table]
            term = (lookup(emb, ids).pow(2).sum(dim=1) * omega).sum()
            total = term if total is None else total + term
        return (self.factor * self.config.lam) * total
