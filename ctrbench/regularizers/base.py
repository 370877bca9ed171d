"""The regularizer contract: optional hooks the engine calls when a plugin defines them.

- ``fit(data)``: learn statistics from the training split (feature-id counts n_j), once per job.
- ``adapt_schema(schema)``: the schema the model is built with (e.g. one extra OOV row per table).
- ``encode(batch)``: rewrite *every* batch, training and evaluation (frequency filter → OOV row).
- ``transform(batch)``: rewrite a *training* batch only (feature-id dropout).
- ``penalty(model, batch)``: a term added to the training loss (λ is the plugin's ``lam`` option).

Plugins may subclass :class:`Regularizer` for the no-op defaults, or implement any subset of the
hooks on their own class; the engine calls only what exists.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from ctrbench.schema import DatasetSplits, Schema

Batch = dict[str, torch.Tensor]


class Regularizer:
    """No-op defaults for the hooks."""

    def fit(self, data: DatasetSplits) -> None:
        """Learn statistics from the training split (e.g. feature-id counts n_j)."""

    def adapt_schema(self, schema: Schema) -> Schema:
        """The schema the model is built with (the dataset's, unless the plugin re-maps ids)."""
        return schema

    def encode(self, batch: Batch) -> Batch:
        """Rewrite every batch the model sees, in training and evaluation alike."""
        return batch

    def transform(self, batch: Batch) -> Batch:
        """Rewrite a *training* batch (e.g. feature-id dropout); never called at evaluation."""
        return batch

    def penalty(self, model: nn.Module, batch: Batch) -> torch.Tensor | None:
        """A term added to the training loss."""
        return None
