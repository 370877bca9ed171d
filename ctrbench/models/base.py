"""``model=base``: BaseModel / Embedding&MLP (DIN §4.2, DIEN §4.1).

Each categorical field is embedded, each behaviour sequence is embedded and sum-pooled into a
fixed-length vector, everything (plus dense features) is concatenated and fed to an MLP
(200-80 by default) with the configured activation; the output is the click logit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ctrbench.nn import MLP, ActivationFactory, EmbeddingBank, sum_pool
from ctrbench.schema import Schema


@dataclass
class BaseModelConfig:
    emb_dim: int = 18  # per field (DIEN's Amazon setting)
    mlp: list[int] = field(default_factory=lambda: [200, 80])
    dropout: float = 0.0


class BaseModel(nn.Module):
    Config = BaseModelConfig

    def __init__(self, config: BaseModelConfig, *, schema: Schema, activation: ActivationFactory) -> None:
        super().__init__()
        self.schema = schema
        self.embeddings = EmbeddingBank(schema, config.emb_dim)
        n_sparse = len(schema.categorical) + len(schema.behaviours)
        in_dim = n_sparse * config.emb_dim + sum(f.dim for f in schema.dense)
        self.mlp = MLP(in_dim, config.mlp, activation, out_dim=1, dropout=config.dropout)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = [self.embeddings(batch, f) for f in self.schema.categorical]
        parts += [sum_pool(self.embeddings(batch, f)) for f in self.schema.behaviours]
        parts += [batch[f.name].reshape(len(parts[0]), -1) for f in self.schema.dense]
        return self.mlp(torch.cat(parts, dim=1)).squeeze(-1)
