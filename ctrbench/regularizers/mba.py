"""``reg=mba``: mini-batch aware ℓ2 regularization (DIN §5.1, eq. 6–7).

For mini-batch B_m the penalty is

    R_m = ½·λ · Σ_j (α_mj / n_j) · ‖w_j‖²,

where α_mj = 1 when some sample of B_m holds id j (candidate or behaviour) and n_j is the id's
number of occurrences in the training set (counted once, in ``fit``). Its gradient on a row
present in the batch is λ·w_j/n_j — exactly the regularization term of eq. 7's update
w_j ← w_j − η·[(1/|B_m|)·Σ ∂L/∂w_j + λ·(α_mj/n_j)·w_j], so ``reg.lam`` is the paper's λ — and
exactly zero elsewhere; its cost depends on the number of distinct ids in the batch, not on the
vocabulary size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ctrbench.regularizers.base import Batch
from ctrbench.regularizers.rowwise import RowPenalty
from ctrbench.regularizers.tables import batch_ids


@dataclass
class MBAConfig:
    lam: float = 0.01  # λ (DIN §6.5 searched it and used 0.01)
    tables: list[str] | None = None  # null: the tables of the behaviour sequences


class MBARegularizer(RowPenalty):
    Config = MBAConfig
    name = "mba"
    factor = 0.5  # ½: the gradient λ·w_j/n_j is eq. 7's update term

    def row_weights(self, table: str, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """α_mj / n_j = 1 / n_j for the distinct ids j of the batch."""
        ids = batch_ids(batch, self.fields[table])
        return ids, 1.0 / self.count(table, ids.device)[ids]
