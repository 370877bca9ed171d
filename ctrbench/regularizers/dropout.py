"""``reg=dropout``: feature-id dropout on behaviour sequences (DIN §6.5).

"Randomly discard 50% of feature ids in each sample": in every *training* sample, each valid
behaviour of the history is dropped independently with probability ``rate``. Ids are dropped,
not activations: the kept behaviours move to the front in their time order, the sequence length
shrinks to the number kept, and every sequence sharing that length key (``hist_item``,
``hist_cat`` and their sampled negatives) drops the same positions so they stay aligned.
Evaluation batches are never touched.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ctrbench.regularizers.base import Batch, Regularizer
from ctrbench.regularizers.tables import select_tables
from ctrbench.schema import DatasetSplits, Field


@dataclass
class DropoutConfig:
    rate: float = 0.5  # probability of discarding each behaviour id (DIN §6.5: 50%)
    tables: list[str] | None = None  # null: every behaviour sequence


class FeatureDropout(Regularizer):
    Config = DropoutConfig

    def __init__(self, config: DropoutConfig) -> None:
        if not 0.0 <= config.rate < 1.0:
            raise ValueError(f"reg.rate={config.rate} is invalid: must be in [0, 1)")
        self.config = config
        # length key (None: valid = id != 0) → the sequence fields dropped together
        self.groups: list[tuple[str | None, list[Field]]] = []

    def fit(self, data: DatasetSplits) -> None:
        schema = data.schema
        tables = select_tables(schema, self.config.tables, "dropout")
        sequences = schema.of_kind("sequence")
        keys = list(dict.fromkeys(f.length for f in schema.behaviours if f.table in tables))
        for key in keys:
            if key is None:  # no length key: each selected sequence is its own group
                alone = [f for f in schema.behaviours if f.length is None and f.table in tables]
                self.groups += [(None, [f]) for f in alone]
            else:
                self.groups.append((key, [f for f in sequences if f.length == key]))

    def transform(self, batch: Batch) -> Batch:
        if self.config.rate == 0.0:
            return batch
        out = dict(batch)
        for key, fields in self.groups:
            first = out[fields[0].name]
            steps = torch.arange(first.shape[1], device=first.device)
            valid = steps[None, :] < out[key][:, None] if key is not None else first != 0
            keep = valid & (torch.rand(valid.shape, device=first.device) >= self.config.rate)
            # kept positions first, in time order (a stable sort on "dropped")
            order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)
            lengths = keep.sum(dim=1)
            kept = steps[None, :] < lengths[:, None]
            for f in fields:
                out[f.name] = torch.where(kept, torch.gather(out[f.name], 1, order), 0)
            if key is not None:
                out[key] = lengths.to(out[key].dtype)
        return out
