"""Embedding bank: one table per schema table, shared by every field that names it."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ctrbench.schema import Field, Schema


@dataclass
class Behaviours:
    """The embedded inputs of a behaviour model (DIN §4.3, DIEN §4).

    query:     (B, D) the candidate, concatenation of the candidate fields that share a table with
               the behaviour fields, in behaviour-field order (e.g. [e_item, e_cat]).
    keys:      (B, L, D) the behaviours e_1..e_L, same layout; padded positions are zero vectors.
    mask:      (B, L) bool, True on valid positions (valid positions come first).
    lengths:   (B,) number of valid positions.
    others:    embeddings (B, d) of the remaining categorical fields (user profile, context).
    negatives: (B, L, D) sampled negative behaviours aligned with ``keys``, when requested.
    """

    query: torch.Tensor
    keys: torch.Tensor
    mask: torch.Tensor
    lengths: torch.Tensor
    others: list[torch.Tensor]
    negatives: torch.Tensor | None = None


class EmbeddingBank(nn.Module):
    """``nn.Embedding`` per table (``hist_item`` and ``item`` share the ``item`` table).

    Row 0 is the padding row (``padding_idx=0``): it stays zero, so padded history positions
    contribute nothing to sum pooling and receive no gradient.
    """

    def __init__(self, schema: Schema, dim: int, init_std: float = 0.01, sparse: bool = False) -> None:
        super().__init__()
        self.schema = schema
        self.dim = dim
        self.tables = nn.ModuleDict(
            {
                name: nn.Embedding(vocab, dim, padding_idx=0, sparse=sparse)
                for name, vocab in schema.tables().items()
            }
        )
        for table in self.tables.values():
            nn.init.normal_(table.weight, std=init_std)
            with torch.no_grad():
                table.weight[0].zero_()
        self._pairs = candidate_pairs(schema)
        paired = {c.name for c, _ in self._pairs}
        self._others = [f for f in schema.categorical if f.name not in paired]

    def table(self, field: Field | str) -> nn.Embedding:
        f = self.schema[field] if isinstance(field, str) else field
        return self.tables[f.table]

    def forward(self, batch: dict[str, torch.Tensor], field: Field | str) -> torch.Tensor:
        """(B, dim) for a categorical field, (B, L, dim) for a sequence field."""
        f = self.schema[field] if isinstance(field, str) else field
        return self.tables[f.table](batch[f.name])

    @property
    def behaviour_dim(self) -> int:
        """Width D of one behaviour (and of the candidate) vector."""
        return self.dim * len(self._pairs)

    @property
    def n_others(self) -> int:
        return len(self._others)

    def behaviours(self, batch: dict[str, torch.Tensor], negatives: bool = False) -> Behaviours:
        if not self._pairs:
            raise ValueError("schema has no behaviour field paired with a candidate field")
        query = torch.cat([self(batch, c) for c, _ in self._pairs], dim=-1)
        keys = torch.cat([self(batch, b) for _, b in self._pairs], dim=-1)
        length_key = self._pairs[0][1].length
        if length_key is not None:
            lengths = batch[length_key]
            mask = torch.arange(keys.shape[1], device=keys.device)[None, :] < lengths[:, None]
        else:
            mask = batch[self._pairs[0][1].name] != 0
            lengths = mask.sum(1)
        neg = None
        if negatives:
            by_target = {f.negative_of: f for f in self.schema.negatives}
            neg = torch.cat([self(batch, by_target[b.name]) for _, b in self._pairs], dim=-1)
        return Behaviours(query, keys, mask, lengths, [self(batch, f) for f in self._others], neg)


def candidate_pairs(schema: Schema) -> list[tuple[Field, Field]]:
    """(candidate field, behaviour field) pairs sharing a table, e.g. (item, hist_item), (cat, hist_cat)."""
    pairs = []
    for b in schema.behaviours:
        cand = next((f for f in schema.categorical if f.table == b.table), None)
        if cand is not None:
            pairs.append((cand, b))
    return pairs


def sum_pool(seq: torch.Tensor) -> torch.Tensor:
    """Sum pooling over the behaviour axis (both papers' BaseModel): (B, L, d) → (B, d).

    Padded positions embed to the zero padding row, so no mask is needed.
    """
    return seq.sum(dim=1)
