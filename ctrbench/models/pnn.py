"""``model=pnn``: Product-based Neural Network, inner-product variant (IPNN, Qu et al. 2016), a
competitor in DIN Table 3.

The product layer outputs the linear signals z = [f_1, …, f_F] (the field embeddings) and the
quadratic signals p = [⟨f_i, f_j⟩]_{i<j} (PNN §3.2, g(f_i, f_j) = ⟨f_i, f_j⟩); the first hidden
layer l_1 = act(l_z + l_p + b_1) with l_z, l_p linear in z and p (PNN §3.1) is the first layer of
an MLP over [z, p]. Behaviour sequences enter as sum-pooled fields, as in DIN's BaseModel; dense features are
appended to the MLP input.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ctrbench.nn import MLP, ActivationFactory
from ctrbench.nn.fields import FieldEmbeddings
from ctrbench.schema import Schema


@dataclass
class PNNConfig:
    emb_dim: int = 18
    mlp: list[int] = field(default_factory=lambda: [200, 80])
    dropout: float = 0.0


class InnerProducts(nn.Module):
    """(B, F, d) → (B, F(F−1)/2): ⟨f_i, f_j⟩ for every pair i < j, in row-major (i, j) order."""

    def __init__(self, n_fields: int) -> None:
        super().__init__()
        i, j = torch.triu_indices(n_fields, n_fields, offset=1)
        self.register_buffer("i", i, persistent=False)
        self.register_buffer("j", j, persistent=False)

    @property
    def n_pairs(self) -> int:
        return self.i.numel()

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        gram = torch.bmm(f, f.transpose(1, 2))
        return gram[:, self.i, self.j]


class PNN(nn.Module):
    Config = PNNConfig

    def __init__(self, config: PNNConfig, *, schema: Schema, activation: ActivationFactory) -> None:
        super().__init__()
        self.fields = FieldEmbeddings(schema, config.emb_dim)
        self.products = InnerProducts(self.fields.n_fields)
        in_dim = self.fields.n_fields * config.emb_dim + self.products.n_pairs + self.fields.dense_dim
        self.mlp = MLP(in_dim, config.mlp, activation, out_dim=1, dropout=config.dropout)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        f = self.fields(batch)
        parts = [f.flatten(1), self.products(f)]
        dense = self.fields.dense(batch)
        if dense is not None:
            parts.append(dense)
        return self.mlp(torch.cat(parts, dim=1)).squeeze(-1)
