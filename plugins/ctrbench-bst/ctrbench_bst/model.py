"""``model=bst``: Behavior Sequence Transformer (Chen et al., "Behavior Sequence Transformer for
E-commerce Recommendation in Alibaba", DLP-KDD 2019) — not a model of the DIN or DIEN papers.

The candidate is put before the user's behaviours as one more token (position 0, so padding
after the behaviours moves no token); learned position embeddings are added; a transformer
encoder (self-attention over the valid tokens only) mixes them; the candidate token's output and
the mean of the behaviour tokens' outputs join the user and context embeddings in an MLP (200-80)
→ click logit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ctrbench.nn import MLP, ActivationFactory, EmbeddingBank
from ctrbench.schema import Schema


@dataclass
class BSTConfig:
    emb_dim: int = 16  # per field; a token is [e_item, e_cat]
    heads: int = 2  # attention heads (must divide the token width)
    layers: int = 1  # transformer blocks
    ffn: int = 64  # width of each block's feed-forward layer
    mlp: list[int] = field(default_factory=lambda: [200, 80])
    dropout: float = 0.1  # inside the transformer blocks


class BST(nn.Module):
    Config = BSTConfig

    def __init__(self, config: BSTConfig, *, schema: Schema, activation: ActivationFactory) -> None:
        super().__init__()
        schema.require("bst", behaviours=True)
        self.embeddings = EmbeddingBank(schema, config.emb_dim)
        width = self.embeddings.behaviour_dim
        if width % config.heads:
            raise ValueError(f"bst: heads={config.heads} must divide the token width {width}")
        self.position = nn.Embedding(schema.max_len + 1, width)  # + 1: the candidate's slot
        block = nn.TransformerEncoderLayer(
            width, config.heads, config.ffn, config.dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(block, config.layers, enable_nested_tensor=False)
        self.dense = [f.name for f in schema.dense]
        in_dim = self.embeddings.n_others * config.emb_dim + 2 * width + sum(f.dim for f in schema.dense)
        self.mlp = MLP(in_dim, config.mlp, activation, out_dim=1)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        b = self.embeddings.behaviours(batch)
        n, length, _ = b.keys.shape
        tokens = torch.cat([b.query[:, None, :], b.keys], dim=1)  # (B, 1 + L, D): candidate first
        tokens = tokens + self.position(torch.arange(length + 1, device=tokens.device))
        valid = torch.cat([b.mask.new_ones(n, 1), b.mask], dim=1)  # the candidate is always valid
        out = self.encoder(tokens, src_key_padding_mask=~valid)
        history = (out[:, 1:] * b.mask[..., None]).sum(1) / b.lengths.clamp(min=1)[:, None]
        parts = [*b.others, out[:, 0], history]
        parts += [batch[name].reshape(n, -1).float() for name in self.dense]
        return self.mlp(torch.cat(parts, dim=1)).squeeze(-1)
