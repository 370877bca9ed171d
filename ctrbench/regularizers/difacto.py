"""``reg=difacto``: frequency-adaptive ℓ2 in the spirit of DiFacto (Li et al., WSDM'16).

DiFacto regularizes a feature's parameters only when the feature occurs, with a strength that
adapts to its frequency. The penalty implemented here, for mini-batch B_m, is

    R_m = λ · Σ_j (c_mj / n_j^β) · ‖w_j‖²,

with c_mj the number of occurrences of id j in B_m (candidate and behaviours), n_j its number of
occurrences in the training set and β = ``beta`` (default 0.5). Per occurrence a frequent id is
regularized less (weight n_j^-β), but over an epoch it collects Σ_m c_mj / n_j^β = n_j^(1-β)
times ‖w_j‖², so frequent ids get the greater total penalty — the behaviour DIN §6.5 describes
(and why it loses to MBA, whose epoch total is about the same for every id). β = 0 is ℓ2 applied
per occurrence; β = 1 gives every id the same epoch total, like MBA but per occurrence.

DIN gives DiFacto no update rule, so λ stays the factor of the penalty itself: the gradient on a
row is 2λ·(c_mj / n_j^β)·w_j. (MBA's λ is instead the one of DIN eq. 7's update, its penalty
½λ·Σ (α_mj/n_j)‖w_j‖²: at β = 1 and c_mj = 1 the same ``reg.lam`` is twice MBA's strength.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ctrbench.regularizers.base import Batch
from ctrbench.regularizers.rowwise import RowPenalty
from ctrbench.regularizers.tables import batch_id_counts


@dataclass
class DiFactoConfig:
    lam: float = 0.01  # λ (DIN §6.5 used 0.01 for DiFacto and MBA)
    beta: float = 0.5  # per-occurrence weight n_j^-β
    tables: list[str] | None = None  # null: the tables of the behaviour sequences


class DiFactoRegularizer(RowPenalty):
    Config = DiFactoConfig
    name = "difacto"

    def __init__(self, config: DiFactoConfig) -> None:
        if not config.beta >= 0:
            raise ValueError(f"reg.beta={config.beta} is invalid: must be a number >= 0")
        super().__init__(config)

    def row_weights(self, table: str, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """c_mj / n_j^β for the distinct ids j of the batch."""
        ids, occurrences = batch_id_counts(batch, self.fields[table])
        n = self.count(table, ids.device)[ids]
        return ids, occurrences.to(n.dtype) * n.pow(-self.config.beta)
