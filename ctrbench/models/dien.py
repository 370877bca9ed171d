"""The DIEN paper's systems: ``gru_attention``, ``aigru``, ``agru``, ``augru`` and ``dien``.

All share BaseModel's features — user/context embeddings, the candidate e_a = [e_item, e_cat],
the sum-pooled behaviours (and dense fields) — plus one interest vector, fed to an MLP (200-80):

* ``gru_attention`` (DIEN Table 2, "two layer GRU attention"): GRU → GRU over the behaviours,
  then attention pooling of the second GRU's states by the candidate;
* ``aigru`` / ``agru`` / ``augru`` (DIEN Table 4): interest extractor GRU (eq. 3–6), attention
  a_t of its states to the candidate (eq. 9), interest evolving layer (eq. 10 / 11 / 12–13);
  the final evolved state h'_T is the interest vector;
* ``dien``: ``augru`` trained with the auxiliary loss (eq. 7–8) on the extractor states.

Every default is the paper's; each difference of the official code (github.com/mouna99/dien,
script/model.py and utils.py) is an option, and ``model=dien_official`` switches them all on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ctrbench.nn import MLP, ActivationFactory, Behaviours, EmbeddingBank, sum_pool
from ctrbench.nn.attention import QUERY_PROJ, TargetAttention
from ctrbench.nn.gru import InterestEvolution, InterestExtractor
from ctrbench.nn.mlp import input_norm, pick_activation
from ctrbench.schema import Schema

Batch = dict[str, torch.Tensor]
AUX_HEADS = ("inner", "mlp")
AUX_NORMS = ("paper", "official", "step_mean")


@dataclass
class GRUAttentionConfig:
    """Options shared by the whole family (defaults: the DIEN paper's Amazon setting)."""

    emb_dim: int = 18  # per field; a behaviour/candidate is [e_item, e_cat] (36 wide)
    hidden: int = 36  # GRU hidden size (DIEN: 36)
    mlp: list[int] = field(default_factory=lambda: [200, 80])  # widths of the final MLP
    att_form: str = "bilinear"  # bilinear = eq. 9, softmax(h_t W e_a); mlp = official code (MLP + softmax)
    att_mlp: list[int] = field(default_factory=lambda: [80, 40])  # widths of the mlp attention
    # input of the mlp attention: official = [e_a, h_t, e_a−h_t, e_a⊙h_t]; outer = DIN paper's
    att_features: str = "official"
    att_act: str = "act"  # mlp attention's hidden layers: act = the `act` group; sigmoid = official code
    # candidate before the mlp attention: auto = a linear map only where widths differ; prelu = official
    # code (always dense to the state width + PReLU)
    att_query: str = "auto"
    tower_product: bool = False  # true = official code: e_a ⊙ Σ_t e_t also into the final MLP
    # normalisation of the final MLP's input: none = paper; batch = BatchNorm1d; frozen = official code
    # (TensorFlow's batch norm never switched to training mode: a learned per-feature affine map)
    input_bn: str = "none"
    dropout: float = 0.0  # dropout after each hidden layer of the final MLP


@dataclass
class AIGRUConfig(GRUAttentionConfig):
    """The shared options; the evolving GRU runs in the compiled kernel (``torch.nn.GRU`` where it cannot)."""


@dataclass
class AGRUConfig(GRUAttentionConfig):
    """Adds the choice of time loop for the attentional GRU."""

    # time loop of the evolving GRU: native (the C kernel on the CPU, graph on CUDA, eager where neither
    # can run) | eager | script | compile | graph (the whole loop compiled once) — same results up to rounding
    loop: str = "native"


@dataclass
class AUGRUConfig(AGRUConfig):
    """Adds the AUGRU gate convention."""

    # paper = eq. 12–13 (ũ = a·u gates the candidate); official = official code's VecAttGRUCell
    # (u gates the previous state, u ← (1 − a)·u)
    gate: str = "paper"


@dataclass
class DIENConfig(AUGRUConfig):
    """Adds the auxiliary loss (eq. 7–8)."""

    aux_alpha: float = 1.0  # α of eq. 8 (the engine's default weight of the "aux" loss; 0 = skip it)
    # inner = paper's σ(⟨h_t, e⟩) (h_t projected when hidden ≠ behaviour width); mlp = official code
    aux_head: str = "inner"
    aux_mlp: list[int] = field(default_factory=lambda: [100, 50])  # widths of the mlp head (sigmoid)
    aux_input_bn: str = "none"  # normalisation of the mlp head's input [h_t, e]: none | batch | frozen
    # normalisation of L_aux: paper = eq. 7, sum over a sample's steps, mean over the samples;
    # official = mean over B·(T_max − 1) entries, padding included; step_mean = mean over valid steps
    aux_norm: str = "paper"


class Tower(nn.Module):
    """MLP([others..., e_a, Σ_t e_t, dense..., interest]) → logit (B,) (DIEN Fig. 1, top).

    ``tower_product`` adds e_a ⊙ Σ_t e_t (official code); ``input_bn`` normalises the input.
    """

    def __init__(
        self,
        embeddings: EmbeddingBank,
        schema: Schema,
        interest_dim: int,
        config: GRUAttentionConfig,
        activation: ActivationFactory,
    ) -> None:
        super().__init__()
        self.dense = [f.name for f in schema.dense]
        in_dim = (
            embeddings.n_others * embeddings.dim
            + 2 * embeddings.behaviour_dim
            + sum(f.dim for f in schema.dense)
            + interest_dim
            + (embeddings.behaviour_dim if config.tower_product else 0)
        )
        self.product = config.tower_product
        self.input_bn = input_norm(config.input_bn, in_dim)
        self.mlp = MLP(in_dim, config.mlp, activation, out_dim=1, dropout=config.dropout)

    def forward(self, batch: Batch, b: Behaviours, interest: torch.Tensor) -> torch.Tensor:
        pooled = sum_pool(b.keys)
        parts = [*b.others, b.query, pooled]
        if self.product:
            parts.append(b.query * pooled)
        parts += [batch[name].reshape(len(interest), -1).float() for name in self.dense]
        return self.mlp(self.input_bn(torch.cat([*parts, interest], dim=1))).squeeze(-1)


def _attention(key_dim: int, query_dim: int, config: GRUAttentionConfig, activation: ActivationFactory):
    """Softmax attention of GRU states to the candidate (eq. 9, or the official MLP form)."""
    if config.att_query not in QUERY_PROJ:
        choices = ", ".join(QUERY_PROJ)
        raise ValueError(f"model.att_query={config.att_query!r} is unknown (choices: {choices})")
    return TargetAttention(
        key_dim,
        query_dim,
        form=config.att_form,
        softmax=True,
        hidden=config.att_mlp,
        activation=pick_activation(config.att_act, activation, "att_act"),
        features=config.att_features,
        query_proj=config.att_query,
    )


class EvolvingInterest(nn.Module):
    """Interest extractor (eq. 3–6) → attention a_t (eq. 9) → interest evolving layer (eq. 10–13).

    ``forward(b)`` → (extractor states h_t (B, L, H), final evolved state h'_T (B, H)).
    """

    def __init__(
        self,
        dim: int,
        config: GRUAttentionConfig,
        activation: ActivationFactory,
        kind: str,
        gate: str = "paper",
        loop: str = "native",
    ) -> None:
        super().__init__()
        self.extractor = InterestExtractor(dim, config.hidden)
        self.attention = _attention(config.hidden, dim, config, activation)
        self.evolution = InterestEvolution(config.hidden, config.hidden, kind=kind, gate=gate, loop=loop)

    def forward(self, b: Behaviours) -> tuple[torch.Tensor, torch.Tensor]:
        states = self.extractor(b.keys, b.lengths)
        att = self.attention.weights(b.query, states, b.mask)
        return states, self.evolution(states, att, b.lengths)[1]


class AuxiliaryLoss(nn.Module):
    """DIEN eq. 7: h_t must tell the next behaviour e_{t+1} from a sampled negative ê_{t+1}.

    Per valid step (t + 1 < length of the row) the term is
    ℓ_it = −log σ(s(h_t, e_{t+1})) − log(1 − σ(s(h_t, ê_{t+1}))). ``head="inner"`` scores
    s = ⟨h_t, e⟩ as the paper (h_t projected to the behaviour width when they differ);
    ``head="mlp"`` is the official code's auxiliary net, an MLP (100-50, sigmoid) on [h_t, e]
    (its input normalised as ``input_bn``: the official code's is ``frozen``), whose first layer's
    h_t part is computed once for the positive and the negative. ``norm`` turns the terms into L_aux:

    * ``paper``     — eq. 7: L_aux = (1/N)·Σ_i Σ_t ℓ_it, N = the rows of the batch;
    * ``official``  — the official code's ``tf.reduce_mean`` of the masked (B, T_max − 1) terms,
      padding included: Σ ℓ_it / (B·(T_max − 1)), T_max = the batch's longest history;
    * ``step_mean`` — the mean over the valid steps of the batch: Σ ℓ_it / #steps.

    0 when a batch has no valid step.
    """

    def __init__(
        self,
        hidden: int,
        dim: int,
        head: str = "inner",
        mlp: list[int] | None = None,
        norm: str = "paper",
        input_bn: str = "none",
    ) -> None:
        super().__init__()
        if head not in AUX_HEADS:
            raise ValueError(f"aux_head {head!r} is unknown (choices: {', '.join(AUX_HEADS)})")
        if norm not in AUX_NORMS:
            raise ValueError(f"model.aux_norm={norm!r} is unknown (choices: {', '.join(AUX_NORMS)})")
        self.head, self.norm = head, norm
        if head == "inner":
            self.project = nn.Linear(hidden, dim, bias=False) if hidden != dim else None
            return
        widths = list(mlp or [100, 50])
        # normalising [h_t, e] per feature is normalising h_t and e apart
        self.norm_h = input_norm(input_bn, hidden, "aux_input_bn")
        self.norm_e = input_norm(input_bn, dim, "aux_input_bn")
        self.first_h = nn.Linear(hidden, widths[0])
        self.first_e = nn.Linear(dim, widths[0], bias=False)
        self.rest = MLP(widths[0], widths[1:], lambda width, ndim=2: nn.Sigmoid(), out_dim=1)

    def forward(
        self, states: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        b, length, _ = states.shape
        step = mask[:, 1:].nonzero()  # (row, t) of the valid steps t: t + 1 < length
        if not len(step):
            return states.new_zeros(())
        at = step[:, 0] * length + step[:, 1]  # flat index of (row, t); of (row, t + 1): at + 1
        h = states.reshape(b * length, -1).index_select(0, at)
        pos = positives.reshape(b * length, -1).index_select(0, at + 1)
        neg = negatives.reshape(b * length, -1).index_select(0, at + 1)
        if self.head == "inner":
            if self.project is not None:
                h = self.project(h)
            e, n = torch.cat([pos, neg]), len(at)  # positives and negatives in one pass
            s = (h.repeat(2, 1) * e).sum(-1)
            total = (F.softplus(-s[:n]) + F.softplus(s[n:])).sum()
        else:
            # h_t's share of the first layer computed once, added to the positive's and the negative's
            # share inside their GEMMs (no concatenated copies: the head's forward + backward at batch
            # 256 took 17 instead of 22 ms on two threads)
            shared, w_e = self.first_h(self.norm_h(h)), self.first_e.weight.t()
            pos_s = self.rest(torch.sigmoid(torch.addmm(shared, self.norm_e(pos), w_e))).squeeze(-1)
            neg_s = self.rest(torch.sigmoid(torch.addmm(shared, self.norm_e(neg), w_e))).squeeze(-1)
            total = F.softplus(-pos_s).sum() + F.softplus(neg_s).sum()
        return total / self.count(mask, len(at))

    def count(self, mask: torch.Tensor, steps: int) -> int:
        """The divisor of the summed terms under ``norm`` (``steps`` = number of valid steps)."""
        if self.norm == "paper":
            return mask.shape[0]
        if self.norm == "official":
            return mask.shape[0] * (int(mask.sum(1).max()) - 1)
        return steps


class GRUAttention(nn.Module):
    """``model=gru_attention``: GRU → GRU → attention pooling by the candidate (DIEN Table 2)."""

    Config = GRUAttentionConfig

    def __init__(self, config: GRUAttentionConfig, *, schema: Schema, activation: ActivationFactory) -> None:
        super().__init__()
        schema.require("gru_attention", behaviours=True)
        self.embeddings = EmbeddingBank(schema, config.emb_dim)
        dim = self.embeddings.behaviour_dim
        self.gru1 = InterestExtractor(dim, config.hidden)
        self.gru2 = InterestExtractor(config.hidden, config.hidden)
        self.attention = _attention(config.hidden, dim, config, activation)
        self.tower = Tower(self.embeddings, schema, config.hidden, config, activation)

    def forward(self, batch: Batch) -> torch.Tensor:
        b = self.embeddings.behaviours(batch)
        states = self.gru2(self.gru1(b.keys, b.lengths), b.lengths)
        pooled, _ = self.attention(b.query, states, b.mask)
        return self.tower(batch, b, pooled)


class EvolvingInterestModel(nn.Module):
    """BaseModel + extractor GRU + an interest-evolving layer of kind ``kind`` (eq. 10–13), no
    auxiliary loss. The three paper rows below are this model with one kind each."""

    Config = AUGRUConfig
    kind = "augru"

    def __init__(self, config: AIGRUConfig, *, schema: Schema, activation: ActivationFactory) -> None:
        super().__init__()
        schema.require(self.kind, behaviours=True)
        self.embeddings = EmbeddingBank(schema, config.emb_dim)
        self.interest = EvolvingInterest(
            self.embeddings.behaviour_dim,
            config,
            activation,
            self.kind,
            getattr(config, "gate", "paper"),
            getattr(config, "loop", "native"),
        )
        self.tower = Tower(self.embeddings, schema, config.hidden, config, activation)

    def forward(self, batch: Batch) -> torch.Tensor:
        b = self.embeddings.behaviours(batch)
        return self.tower(batch, b, self.interest(b)[1])


class AIGRUModel(EvolvingInterestModel):
    """``model=aigru``: extractor GRU + GRU on attention-scaled inputs (eq. 10)."""

    Config = AIGRUConfig
    kind = "aigru"


class AGRUModel(EvolvingInterestModel):
    """``model=agru``: extractor GRU + attention-based GRU (eq. 11)."""

    Config = AGRUConfig
    kind = "agru"


class AUGRUModel(EvolvingInterestModel):
    """``model=augru``: extractor GRU + GRU with attentional update gate (eq. 12–13), no auxiliary loss."""

    Config = AUGRUConfig
    kind = "augru"


class DIEN(nn.Module):
    """``model=dien``: AUGRU with the auxiliary loss (eq. 7); L = L_target + α·L_aux (eq. 8).

    In training (and α ≠ 0) ``forward`` returns (logits, {"aux": L_aux}); the engine weighs it
    by ``loss_weights["aux"]`` = α. Otherwise it returns the logits only.
    """

    Config = DIENConfig

    def __init__(self, config: DIENConfig, *, schema: Schema, activation: ActivationFactory) -> None:
        super().__init__()
        schema.require("dien", behaviours=True, negatives=config.aux_alpha != 0)
        self.aux_alpha = config.aux_alpha
        self.loss_weights = {"aux": config.aux_alpha}
        self.embeddings = EmbeddingBank(schema, config.emb_dim)
        dim = self.embeddings.behaviour_dim
        self.interest = EvolvingInterest(dim, config, activation, "augru", config.gate, config.loop)
        self.aux = AuxiliaryLoss(
            config.hidden, dim, config.aux_head, config.aux_mlp, config.aux_norm, config.aux_input_bn
        )
        self.tower = Tower(self.embeddings, schema, config.hidden, config, activation)

    def forward(self, batch: Batch) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with_aux = self.training and self.aux_alpha != 0
        b = self.embeddings.behaviours(batch, negatives=with_aux)
        states, final = self.interest(b)
        logits = self.tower(batch, b, final)
        if not with_aux:
            return logits
        return logits, {"aux": self.aux(states, b.keys, b.negatives, b.mask)}
