"""``model=wide_deep``: Wide&Deep (Cheng et al. 2016) as set up in DIN §6.2, a competitor in Table 3.

logit = deep + wide. The deep part is BaseModel (Embedding&MLP). The wide part is a linear model
over the first-order ids of the categorical fields and, following DeepFM's practice as DIN does,
the cross-product of every user behaviour with the candidate: for each (candidate field c, behaviour
field b) pair sharing a table (item × hist_item, cat × hist_cat) and each valid position j,

    wide = Σ_f w[id_f] + Σ_(c,b) Σ_{j valid} u[hash_(c,b)(h_j, c)]

with u a hashed weight table of ``wide_buckets`` rows (row 0 = padding, never used by a real cross).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ctrbench.models.base import BaseModel, BaseModelConfig
from ctrbench.nn import ActivationFactory, candidate_pairs
from ctrbench.nn.fields import FieldEmbeddings
from ctrbench.schema import MissingFieldError, Schema

_M32 = 0xFFFFFFFF
# Odd multipliers below 2^31: a 32-bit value times one stays below 2^63, so int64 never overflows.
_K1, _K2 = 0x7FEB352D, 0x5BD1E995
_GOLDEN = 0x9E3779B9


@dataclass
class WideDeepConfig(BaseModelConfig):
    wide_buckets: int = 1 << 20  # rows of the hashed cross-product weight table


def mix32(x: torch.Tensor) -> torch.Tensor:
    """Multiply-xorshift bijection on [0, 2^32) (int64 tensors holding 32-bit values)."""
    x = x ^ (x >> 16)
    x = (x * _K1) & _M32
    x = x ^ (x >> 15)
    x = (x * _K2) & _M32
    return x ^ (x >> 16)


def cross_hash(h: torch.Tensor, c: torch.Tensor, pair: int, buckets: int) -> torch.Tensor:
    """Bucket in [1, buckets) of the ordered cross (h, c) of candidate pair number ``pair``:

        1 + mix32(mix32((h + salt_pair) mod 2^32) xor (c mod 2^32)) mod (buckets − 1)

    (h, c) and (c, h) land in different buckets, and so do equal ids of different pairs.
    """
    salt = ((pair + 1) * _GOLDEN) & _M32
    x = mix32((h + salt) & _M32)
    x = mix32(x ^ (c & _M32))
    return 1 + x % (buckets - 1)


class CrossProductWide(nn.Module):
    """The wide part: first-order weights of the categorical fields plus hashed behaviour × candidate
    crosses; padded history positions map to the zero padding row 0 and contribute nothing."""

    def __init__(self, schema: Schema, buckets: int) -> None:
        super().__init__()
        if buckets < 2:
            raise ValueError(f"model.wide_buckets must be >= 2, got {buckets}")
        self.buckets = buckets
        self.pairs = candidate_pairs(schema)
        self.first_order = FieldEmbeddings(schema, 1, init_std=0.0, behaviours=False)
        self.cross = nn.Embedding(buckets, 1, padding_idx=0)
        nn.init.zeros_(self.cross.weight)

    def cross_ids(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, P·L) bucket of every (pair, position); 0 at padded positions."""
        out = []
        for p, (cand, beh) in enumerate(self.pairs):
            h = batch[beh.name]
            valid = h != 0
            if beh.length is not None:
                steps = torch.arange(h.shape[1], device=h.device)
                valid &= steps[None, :] < batch[beh.length][:, None]
            ids = cross_hash(h, batch[cand.name][:, None], p, self.buckets)
            out.append(torch.where(valid, ids, 0))
        return torch.cat(out, dim=1)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        first = self.first_order(batch).sum(dim=(1, 2))
        return first + self.cross(self.cross_ids(batch)).sum(dim=(1, 2))


class WideDeep(nn.Module):
    Config = WideDeepConfig

    def __init__(self, config: WideDeepConfig, *, schema: Schema, activation: ActivationFactory) -> None:
        super().__init__()
        schema.require("wide_deep", behaviours=True)
        if not candidate_pairs(schema):
            raise MissingFieldError(
                f"model 'wide_deep' needs a behaviour field sharing a table with a candidate field "
                f"(e.g. hist_item with item), which dataset {schema.source or '?'!r} does not provide"
            )
        self.deep = BaseModel(config, schema=schema, activation=activation)
        self.wide = CrossProductWide(schema, config.wide_buckets)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.deep(batch) + self.wide(batch)
