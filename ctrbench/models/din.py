"""``model=din``: Deep Interest Network (DIN §4.3, eq. 3).

The user's interest for candidate A is v_U(A) = Σ_j a(e_j, v_A)·e_j, where the local activation
unit a(·) is a small MLP (80-40) over the interaction of behaviour e_j and candidate v_A. The
paper does not normalise the weights (Σ_j w_j keeps the intensity of interest); the official code
applies a softmax (``att_softmax=true``). v_U(A) replaces BaseModel's sum pooling:
MLP([user profile, context, v_A, v_U(A)]) → logit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ctrbench.nn import MLP, ActivationFactory, EmbeddingBank
from ctrbench.nn.attention import TargetAttention
from ctrbench.schema import Schema


@dataclass
class DINConfig:
    emb_dim: int = 18  # per field; a behaviour/candidate is [e_item, e_cat]
    mlp: list[int] = field(default_factory=lambda: [200, 80])
    att_mlp: list[int] = field(default_factory=lambda: [80, 40])  # local activation unit widths
    att_softmax: bool = False  # false = paper (raw weights); true = official code (softmax)
    att_features: str = (
        "outer"  # outer = paper [e_j, v_A, e_j ⊗ v_A]; official = [v_A, e_j, v_A−e_j, v_A⊙e_j]
    )
    dropout: float = 0.0


class DIN(nn.Module):
    Config = DINConfig

    def __init__(self, config: DINConfig, *, schema: Schema, activation: ActivationFactory) -> None:
        super().__init__()
        schema.require("din", behaviours=True)
        self.embeddings = EmbeddingBank(schema, config.emb_dim)
        dim = self.embeddings.behaviour_dim
        self.attention = TargetAttention(
            dim,
            dim,
            form="mlp",
            softmax=config.att_softmax,
            hidden=config.att_mlp,
            activation=activation,
            features=config.att_features,
        )
        dense = sum(f.dim for f in schema.dense)
        in_dim = self.embeddings.n_others * config.emb_dim + 2 * dim + dense
        self.mlp = MLP(in_dim, config.mlp, activation, out_dim=1, dropout=config.dropout)
        self.dense = [f.name for f in schema.dense]

    def interest(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(v_U(A) (B, D), activation weights (B, L)) — the weights are DIN Fig. 5's bars."""
        b = self.embeddings.behaviours(batch)
        return self.attention(b.query, b.keys, b.mask)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        b = self.embeddings.behaviours(batch)
        pooled, _ = self.attention(b.query, b.keys, b.mask)
        parts = [*b.others, b.query, pooled]
        parts += [batch[name].reshape(len(pooled), -1) for name in self.dense]
        return self.mlp(torch.cat(parts, dim=1)).squeeze(-1)
