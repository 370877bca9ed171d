"""``model=lr``: logistic regression over every sparse feature (DIN Table 3, first row).

logit = b + Σ_fields w[id_f] + Σ_behaviour-fields Σ_j w[h_j] + v·dense — behaviours sum-pooled.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ctrbench.nn import ActivationFactory, EmbeddingBank, sum_pool
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
        self.config = config
        self.schema = schema
        self.weights = EmbeddingBank(schema, dim=1, init_std=0.0)
        dense = sum(f.dim for f in schema.dense)
        self.dense = nn.Linear(dense, 1, bias=False) if dense else None
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logit = self.bias.expand(batch[self.schema.label].shape[0])
        for f in self.schema.categorical:
            logit = logit + self.weights(batch, f).squeeze(-1)
        if self.config.use_behaviours:
            for f in self.schema.behaviours:
                logit = logit + sum_pool(self.weights(batch, f)).squeeze(-1)
        if self.dense is not None:
            x = torch.cat([batch[f.name].reshape(len(logit), -1) for f in self.schema.dense], dim=1)
            logit = logit + self.dense(x).squeeze(-1)
        return logit
