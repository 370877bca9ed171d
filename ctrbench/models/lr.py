"""``model=lr``: logistic regression over every sparse feature (DIN Table 3, first row).

logit = b + Σ_fields w[id_f] + Σ_behaviour-fields Σ_j w[h_j] + v·dense — behaviours sum-pooled.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ctrbench.nn import ActivationFactory
from ctrbench.nn.fields import FieldEmbeddings
from ctrbench.schema import Schema


@dataclass
class LRConfig:
    use_behaviours: bool = True  # include the sum-pooled behaviour ids as features


class LogisticRegression(nn.Module):
    Config = LRConfig

    def __init__(
        self, config: LRConfig, *, schema: Schema, activation: ActivationFactory | None = None
    ) -> None:
        super().__init__()
        self.weights = FieldEmbeddings(schema, dim=1, init_std=0.0, behaviours=config.use_behaviours)
        self.dense = nn.Linear(self.weights.dense_dim, 1, bias=False) if self.weights.dense_dim else None
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logit = self.weights(batch).sum(dim=(1, 2)) + self.bias
        dense = self.weights.dense(batch)
        if dense is not None:
            logit = logit + self.dense(dense).squeeze(-1)
        return logit
