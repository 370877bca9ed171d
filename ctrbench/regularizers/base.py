"""The regularizer contract: three optional hooks (fit, transform, penalty).

Plugins may subclass :class:`Regularizer` for the no-op defaults, or implement any subset of the
hooks on their own class; the engine calls only what exists.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from ctrbench.schema import DatasetSplits

Batch = dict[str, torch.Tensor]


class Regularizer:
    """No-op defaults for the three hooks."""

    def fit(self, data: DatasetSplits) -> None:
        """(a) Learn statistics from the training split (e.g. feature-id counts n_j)."""

    def transform(self, batch: Batch) -> Batch:
        """(b) Rewrite a *training* batch (e.g. feature-id dropout); never called at evaluation."""
        return batch

    def penalty(self, model: nn.Module, batch: Batch) -> torch.Tensor | None:
        """(c) A term added to the training loss (λ is the plugin's ``lam`` option)."""
        return None
