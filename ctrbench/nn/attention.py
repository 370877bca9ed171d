"""Target attention: score every behaviour against the candidate, mask padding, (normalise,) pool.

One implementation serves DIN's local activation unit (DIN eq. 3, Fig. 2), DIEN's attention
(DIEN eq. 9) and the "two layer GRU attention" baseline.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ctrbench.nn.activation import ActivationFactory, PReLU
from ctrbench.nn.mlp import MLP

FEATURES = ("outer", "official")
FORMS = ("mlp", "bilinear")
QUERY_PROJ = ("auto", "prelu")
_MASKED = -1e9  # finite "minus infinity": an all-padding row gets zero weights, never NaN


class LocalActivationUnit(nn.Module):
    """DIN eq. (3): the weight of behaviour e_j for candidate v_A is a small MLP of their interaction.

    ``features`` selects the MLP input:

    * ``outer``    — the paper (Fig. 2): [e_j, v_A, vec(e_j ⊗ v_A)] (the "out product");
    * ``official`` — the official code: [v_A, e_j, v_A − e_j, v_A ⊙ e_j].

    Both first layers are linear in e_j once v_A is fixed, so they are applied as a per-sample
    matrix, ``pre_j = A(v_A)·e_j + c(v_A)``, and the candidate's share is computed once per sample
    instead of once per behaviour:

    * outer:    A = W_k + W_o ×₃ v_A,             c = W_q·v_A + b
    * official: A = (W_k − W_d) + W_p·diag(v_A),   c = (W_q + W_d)·v_A + b

    (the official form's four weight blocks collapse exactly to three parameters: W_k' = W_k − W_d
    and W_q' = W_q + W_d are learned directly). The outer form runs as one batched matmul with the
    per-sample A; the official one as a single GEMM of the valid positions' rows [e_j, v_A ⊙ e_j]
    with [W_k', W_p], so padding costs nothing. The layers after the first run on the valid
    positions packed into 2-D, so padding never enters the statistics of a stateful activation
    (Dice) either. Returns raw scores (B, L), 0 at padded positions.

    ``query_proj`` maps the candidate before the features: ``auto`` by a linear layer to the key
    width only when the official features need equal widths; ``prelu`` always by a dense layer to
    the key width followed by PReLU (slope initialised to 0.1), as the official DIEN code's
    ``din_fcn_attention`` does.
    """

    def __init__(
        self,
        key_dim: int,
        query_dim: int,
        hidden: Sequence[int],
        activation: ActivationFactory,
        features: str = "outer",
        query_proj: str = "auto",
    ) -> None:
        super().__init__()
        if features not in FEATURES:
            raise ValueError(f"attention features {features!r} is unknown (choices: {', '.join(FEATURES)})")
        if query_proj not in QUERY_PROJ:
            raise ValueError(
                f"attention query projection {query_proj!r} is unknown (choices: {', '.join(QUERY_PROJ)})"
            )
        if not hidden:
            raise ValueError("the attention MLP needs at least one hidden layer")
        self.features = features
        width = hidden[0]
        self.project: nn.Module | None = None
        if query_proj == "prelu":  # official DIEN: dense to the key width, then PReLU
            self.project = nn.Sequential(nn.Linear(query_dim, key_dim), PReLU(key_dim, init=0.1))
        elif features == "official" and query_dim != key_dim:
            # official form with different widths: project the query to the key width first
            self.project = nn.Linear(query_dim, key_dim)
        q_dim = key_dim if self.project is not None else query_dim
        self.query = nn.Linear(q_dim, width)
        self.key = nn.Parameter(torch.empty(width, key_dim).uniform_(-1, 1).div_(math.sqrt(key_dim)))
        if features == "outer":
            bound = 1.0 / math.sqrt(key_dim * q_dim)
            self.inter = nn.Parameter(torch.empty(width, key_dim, q_dim).uniform_(-bound, bound))
        else:
            self.inter = nn.Parameter(torch.empty(width, key_dim).uniform_(-1, 1).div_(math.sqrt(key_dim)))
        self.act = activation(width, 2)
        self.rest = MLP(width, list(hidden[1:]), activation, out_dim=1)

    def first_layer(
        self, query: torch.Tensor, keys: torch.Tensor, positions: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Pre-activations of the first layer: (B, L, hidden[0]) for every position, or (N, hidden[0])
        at ``positions``, flat indices into the (B·L) positions."""
        if self.project is not None:
            query = self.project(query)
        shared = self.query(query)  # c(v_A): the candidate's share, once per sample
        b, length, dim = keys.shape
        if self.features == "outer":
            a = self.key + torch.einsum("hkq,bq->bhk", self.inter, query)
            pre = torch.baddbmm(shared[:, None, :], keys, a.transpose(1, 2))
            return pre if positions is None else pre.reshape(b * length, -1).index_select(0, positions)
        # official: A(v_A)·e_j = W_k'·e_j + W_p·(v_A ⊙ e_j), one GEMM over the rows [e_j, v_A ⊙ e_j]
        flat = keys.reshape(b * length, dim)
        if positions is None:
            rows = torch.arange(b, device=keys.device).repeat_interleave(length)
        else:
            flat, rows = flat.index_select(0, positions), torch.div(positions, length, rounding_mode="floor")
        x = torch.cat([flat, flat * query.index_select(0, rows)], 1)
        pre = torch.addmm(shared.index_select(0, rows), x, torch.cat([self.key, self.inter], 1).t())
        return pre if positions is not None else pre.view(b, length, -1)

    def forward(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        positions = mask.reshape(-1).nonzero().squeeze(1)  # valid positions, flat
        valid = self.rest(self.act(self.first_layer(query, keys, positions))).squeeze(-1)
        return valid.new_zeros(mask.numel()).index_copy(0, positions, valid).view(mask.shape)


class BilinearScore(nn.Module):
    """DIEN eq. (9) score: h_t · W · e_a (the query is projected once per sample). Returns (B, L)."""

    def __init__(self, key_dim: int, query_dim: int) -> None:
        super().__init__()
        self.weight = nn.Linear(query_dim, key_dim, bias=False)

    def forward(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.bmm(keys, self.weight(query).unsqueeze(-1)).squeeze(-1) * mask


def masked_weights(scores: torch.Tensor, mask: torch.Tensor, softmax: bool) -> torch.Tensor:
    """Attention weights from scores: softmax over valid positions, or the raw scores (DIN: no
    normalisation, so Σ_j w_j keeps the intensity of interest); 0 on padding either way."""
    if softmax:
        return torch.softmax(scores.masked_fill(~mask, _MASKED), dim=1) * mask
    return scores * mask


def weighted_sum(weights: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Σ_j w_j v_j: (B, L) × (B, L, D) → (B, D)."""
    return torch.bmm(weights.unsqueeze(1), values).squeeze(1)


class TargetAttention(nn.Module):
    """Candidate-to-behaviour attention with pooling.

    form ``mlp`` = :class:`LocalActivationUnit` (DIN eq. 3, DIEN's official code),
    form ``bilinear`` = :class:`BilinearScore` (DIEN eq. 9). ``softmax`` normalises over valid
    positions (DIEN eq. 9; DIN's official code) or keeps raw scores (DIN paper); ``scale`` divides
    the scores by √D (D = key width) first, as DIN's official code does before its softmax.
    ``forward`` returns (pooled (B, D_values), weights (B, L)).
    """

    def __init__(
        self,
        key_dim: int,
        query_dim: int,
        form: str = "mlp",
        softmax: bool = False,
        hidden: Sequence[int] = (80, 40),
        activation: ActivationFactory | None = None,
        features: str = "outer",
        scale: bool = False,
        query_proj: str = "auto",
    ) -> None:
        super().__init__()
        if form not in FORMS:
            raise ValueError(f"attention form {form!r} is unknown (choices: {', '.join(FORMS)})")
        self.softmax = softmax
        # official DIN: scores / √D before the softmax, D = the key width
        self.scale = math.sqrt(key_dim) if scale else None
        if form == "mlp":
            if activation is None:
                raise ValueError("the mlp attention form needs an activation factory")
            self.score: nn.Module = LocalActivationUnit(
                key_dim, query_dim, hidden, activation, features, query_proj
            )
        else:
            self.score = BilinearScore(key_dim, query_dim)

    def weights(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scores = self.score(query, keys, mask)
        if self.scale is not None:
            scores = scores / self.scale
        return masked_weights(scores, mask, self.softmax)

    def forward(
        self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor, values: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.weights(query, keys, mask)
        return weighted_sum(w, keys if values is None else values), w
