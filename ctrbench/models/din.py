"""``model=din``: Deep Interest Network (DIN §4.3, eq. 3).

The user's interest for candidate A is v_U(A) = Σ_j a(e_j, v_A)·e_j, where the local activation
unit a(·) is a small MLP (80-40) over the interaction of behaviour e_j and candidate v_A. The
paper does not normalise the weights (Σ_j w_j keeps the intensity of interest). v_U(A) replaces
BaseModel's sum pooling: MLP([user profile, context, v_A, v_U(A)]) → logit.

Every default is the paper's. The official code (github.com/zhougr1993/DeepInterestNetwork,
din/model.py) differs in ways each option below switches on; ``model=din_official`` turns them
all on: softmax of the scores divided by √D (``att_softmax``, ``att_scale``), features
[v_A, e_j, v_A − e_j, v_A ⊙ e_j] (``att_features``), sigmoid inside the activation unit
(``att_act``) and in the MLP (``mlp_act``), a normalisation + dense layer on v_U(A)
(``interest_fc``), MLP input [v_U', v_A, v_U' ⊙ v_A] (``mlp_product``, ``profile``) behind a
batch-norm layer that TensorFlow runs in inference mode throughout (``input_bn=frozen``), and a
per-item bias added to the logit (``item_bias``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ctrbench.nn import MLP, ActivationFactory, EmbeddingBank, candidate_pairs
from ctrbench.nn.attention import TargetAttention
from ctrbench.nn.mlp import input_norm, pick_activation
from ctrbench.schema import Schema


@dataclass
class DINConfig:
    emb_dim: int = 18  # per field; a behaviour/candidate is [e_item, e_cat]
    mlp: list[int] = field(default_factory=lambda: [200, 80])
    att_mlp: list[int] = field(default_factory=lambda: [80, 40])  # local activation unit widths
    att_softmax: bool = False  # false = paper (raw weights); true = official code (softmax)
    att_features: str = (
        "outer"  # outer = paper [e_j, v_A, e_j ⊗ v_A]; official = [v_A, e_j, v_A−e_j, v_A⊙e_j]
    )
    att_scale: bool = False  # true = official: scores / √D before the softmax (D = behaviour width)
    att_act: str = "act"  # activation unit's hidden layers: act = the `act` group; sigmoid = official
    mlp_act: str = "act"  # the MLP's hidden layers: act = the `act` group; sigmoid = official
    # normalisation of the MLP input: none = paper; batch = BatchNorm1d; frozen = official (TensorFlow's
    # batch norm never switched to training mode: a learned per-feature affine map)
    input_bn: str = "none"
    interest_fc: bool = False  # true = official: v_U' = dense(norm(v_U(A))), norm as input_bn
    mlp_product: bool = False  # true = official: v_U ⊙ v_A also into the MLP
    profile: bool = True  # user profile / context fields into the MLP; false = official (it reads none)
    item_bias: bool = False  # true = official: a learned scalar per candidate item added to the logit
    dropout: float = 0.0


class DIN(nn.Module):
    Config = DINConfig

    def __init__(self, config: DINConfig, *, schema: Schema, activation: ActivationFactory) -> None:
        super().__init__()
        schema.require("din", behaviours=True)
        self.embeddings = EmbeddingBank(schema, config.emb_dim)
        dim = self.embeddings.behaviour_dim
        self.attention = TargetAttention(
            dim,
            dim,
            form="mlp",
            softmax=config.att_softmax,
            hidden=config.att_mlp,
            activation=pick_activation(config.att_act, activation, "att_act"),
            features=config.att_features,
            scale=config.att_scale,
        )
        self.interest_fc: nn.Module | None = None
        if config.interest_fc:
            self.interest_fc = nn.Sequential(input_norm(config.input_bn, dim), nn.Linear(dim, dim))
        self.profile, self.product = config.profile, config.mlp_product
        dense = sum(f.dim for f in schema.dense)
        others = self.embeddings.n_others * config.emb_dim if config.profile else 0
        in_dim = others + (3 if config.mlp_product else 2) * dim + dense
        self.input_bn = input_norm(config.input_bn, in_dim)
        mlp_act = pick_activation(config.mlp_act, activation, "mlp_act")
        self.mlp = MLP(in_dim, config.mlp, mlp_act, out_dim=1, dropout=config.dropout)
        self.dense = [f.name for f in schema.dense]
        self.item_bias: nn.Embedding | None = None
        if config.item_bias:  # one scalar per id of the candidate's first paired field (the item)
            self.item_field = candidate_pairs(schema)[0][0]
            self.item_bias = nn.Embedding(schema.tables()[self.item_field.table], 1)
            nn.init.zeros_(self.item_bias.weight)

    def interest(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(v_U(A) (B, D), activation weights (B, L)) — the weights are DIN Fig. 5's bars."""
        b = self.embeddings.behaviours(batch)
        return self.attention(b.query, b.keys, b.mask)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        b = self.embeddings.behaviours(batch)
        pooled, _ = self.attention(b.query, b.keys, b.mask)
        if self.interest_fc is not None:
            pooled = self.interest_fc(pooled)
        parts = [*b.others] if self.profile else []
        parts += [b.query, pooled]
        if self.product:
            parts.append(pooled * b.query)
        parts += [batch[name].reshape(len(pooled), -1) for name in self.dense]
        logits = self.mlp(self.input_bn(torch.cat(parts, dim=1))).squeeze(-1)
        if self.item_bias is not None:
            logits = logits + self.item_bias(batch[self.item_field.name]).squeeze(-1)
        return logits
