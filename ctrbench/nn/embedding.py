"""Embedding bank: one table per schema table, shared by every field that names it."""

from __future__ import annotations

import torch
from torch import nn

from ctrbench.schema import Field, Schema


class EmbeddingBank(nn.Module):
    """``nn.Embedding`` per table (``hist_item`` and ``item`` share the ``item`` table).

    Row 0 is the padding row (``padding_idx=0``): it stays zero, so padded history positions
    contribute nothing to sum pooling and receive no gradient.
    """

    def __init__(self, schema: Schema, dim: int, init_std: float = 0.01, sparse: bool = False) -> None:
        super().__init__()
        self.schema = schema
        self.dim = dim
        self.tables = nn.ModuleDict(
            {
                name: nn.Embedding(vocab, dim, padding_idx=0, sparse=sparse)
                for name, vocab in schema.tables().items()
            }
        )
        for table in self.tables.values():
            nn.init.normal_(table.weight, std=init_std)
            with torch.no_grad():
                table.weight[0].zero_()

    def table(self, field: Field | str) -> nn.Embedding:
        f = self.schema[field] if isinstance(field, str) else field
        return self.tables[f.table]

    def forward(self, batch: dict[str, torch.Tensor], field: Field | str) -> torch.Tensor:
        """(B, dim) for a categorical field, (B, L, dim) for a sequence field."""
        f = self.schema[field] if isinstance(field, str) else field
        return self.tables[f.table](batch[f.name])


def sum_pool(seq: torch.Tensor) -> torch.Tensor:
    """Sum pooling over the behaviour axis (both papers' BaseModel): (B, L, d) → (B, d).

    Padded positions embed to the zero padding row, so no mask is needed.
    """
    return seq.sum(dim=1)
