"""``model=base``: BaseModel / Embedding&MLP (DIN §4.2, DIEN §4.1).

Each categorical field is embedded, each behaviour sequence is embedded and sum-pooled into a
fixed-length vector, everything (plus dense features) is concatenated and fed to an MLP
(200-80 by default) with the configured activation; the output is the click logit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ctrbench.nn import MLP, ActivationFactory
from ctrbench.nn.fields import FieldEmbeddings
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
        self.fields = FieldEmbeddings(schema, config.emb_dim)
        in_dim = self.fields.n_fields * config.emb_dim + self.fields.dense_dim
        self.mlp = MLP(in_dim, config.mlp, activation, out_dim=1, dropout=config.dropout)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        x = self.fields(batch).flatten(1)
        dense = self.fields.dense(batch)
        if dense is not None:
            x = torch.cat([x, dense], dim=1)
        return self.mlp(x).squeeze(-1)
