"""``model=deepfm``: DeepFM (Guo et al. 2017), a competitor in DIN Table 3.

logit = y_FM + y_DNN (DeepFM eq. 1) over field embeddings v_f shared by both components:

    y_FM  = Σ_f w[id_f] + Σ_b Σ_j w[h_j] + Σ_{i<j} ⟨v_i, v_j⟩                      (DeepFM eq. 2)
    y_DNN = MLP([v_1, …, v_F])                                      (the deep component)

with Σ_{i<j} ⟨v_i, v_j⟩ = ½ Σ_k [(Σ_f v_{f,k})² − Σ_f v_{f,k}²] (Rendle 2010, lemma 3.1).

Behaviour sequences enter as sum-pooled fields, as in DIN's BaseModel; dense features join the
first-order term (linearly) and the MLP input.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ctrbench.nn import MLP, ActivationFactory
from ctrbench.nn.fields import FieldEmbeddings
from ctrbench.schema import Schema


@dataclass
class DeepFMConfig:
    emb_dim: int = 18
    mlp: list[int] = field(default_factory=lambda: [200, 80])
    dropout: float = 0.0


def fm_second_order(v: torch.Tensor) -> torch.Tensor:
    """Σ_{i<j} ⟨v_i, v_j⟩ for (B, F, d) field embeddings, as ½ Σ_k [(Σ_f v_fk)² − Σ_f v_fk²] → (B,)."""
    return 0.5 * (v.sum(dim=1).pow(2) - v.pow(2).sum(dim=1)).sum(dim=1)


class DeepFM(nn.Module):
    Config = DeepFMConfig

    def __init__(self, config: DeepFMConfig, *, schema: Schema, activation: ActivationFactory) -> None:
        super().__init__()
        self.fields = FieldEmbeddings(schema, config.emb_dim)
        self.first_order = FieldEmbeddings(schema, 1, init_std=0.0)
        dense = self.fields.dense_dim
        self.dense = nn.Linear(dense, 1, bias=False) if dense else None
        in_dim = self.fields.n_fields * config.emb_dim + dense
        self.mlp = MLP(in_dim, config.mlp, activation, out_dim=1, dropout=config.dropout)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        v = self.fields(batch)
        fm = self.first_order(batch).sum(dim=(1, 2)) + fm_second_order(v)
        x = v.flatten(1)
        dense = self.fields.dense(batch)
        if dense is not None and self.dense is not None:
            fm = fm + self.dense(dense).squeeze(-1)
            x = torch.cat([x, dense], dim=1)
        return fm + self.mlp(x).squeeze(-1)
