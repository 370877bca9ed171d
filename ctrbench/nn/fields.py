"""Field-wise inputs of the feature-interaction models (Wide&Deep, PNN, DeepFM).

Each categorical field is one field and each behaviour sequence, sum-pooled, is one more field
(DIN §6.2: the competitors see behaviours as BaseModel does), so a sample is a (B, F, d) stack.
"""

from __future__ import annotations

import torch
from torch import nn

from ctrbench.nn.embedding import EmbeddingBank, sum_pool
from ctrbench.schema import Schema


class FieldEmbeddings(nn.Module):
    """``forward(batch)`` → (B, F, dim): categorical fields, then sum-pooled behaviour fields.

    With ``dim=1`` and ``init_std=0`` the stack holds first-order (LR) weights: summing it gives
    Σ_f w[id_f] + Σ_b Σ_j w[h_j]. ``behaviours=False`` keeps the categorical fields only.
    """

    def __init__(self, schema: Schema, dim: int, init_std: float = 0.01, behaviours: bool = True) -> None:
        super().__init__()
        self.schema = schema
        self.bank = EmbeddingBank(schema, dim, init_std=init_std)
        self.categorical = list(schema.categorical)
        self.sequences = list(schema.behaviours) if behaviours else []
        self.dense_dim = sum(f.dim for f in schema.dense)

    @property
    def n_fields(self) -> int:
        return len(self.categorical) + len(self.sequences)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = [self.bank(batch, f) for f in self.categorical]
        parts += [sum_pool(self.bank(batch, f)) for f in self.sequences]
        return torch.stack(parts, dim=1)

    def dense(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """The dense features concatenated, (B, Σ dim), or None when the schema has none."""
        if not self.dense_dim:
            return None
        cols = [batch[f.name] for f in self.schema.dense]
        return torch.cat([c.reshape(len(c), -1).float() for c in cols], dim=1)
