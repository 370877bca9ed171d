"""Target attention against explicit computations (DIN eq. 3, DIEN eq. 9)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ctrbench.nn.activation import PReLU
from ctrbench.nn.attention import BilinearScore, LocalActivationUnit, TargetAttention, masked_weights
from ctrbench.nn.mlp import sigmoid

B, L, D, H = 3, 4, 5, 6
torch.manual_seed(0)
Q = torch.randn(B, D)
K = torch.randn(B, L, D)
MASK = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)


def prelu(width: int, ndim: int = 2) -> nn.Module:
    return PReLU(width)


def test_outer_first_layer_equals_the_papers_concatenated_out_product() -> None:
    unit = LocalActivationUnit(D, D, [H, 3], prelu, features="outer")
    feats = torch.cat(
        [K, Q[:, None, :].expand(B, L, D), (K[..., :, None] * Q[:, None, None, :]).reshape(B, L, D * D)], -1
    )
    weight = torch.cat([unit.key, unit.query.weight, unit.inter.reshape(H, D * D)], 1)
    explicit = feats @ weight.T + unit.query.bias
    assert torch.allclose(unit.first_layer(Q, K), explicit, atol=1e-5)


def test_official_features_collapse_exactly() -> None:
    """[q, k, q−k, q⊙k]·[W_q; W_k; W_d; W_p] equals the three-parameter form used."""
    wq, wk, wd, wp = (torch.randn(H, D) for _ in range(4))
    bias = torch.randn(H)
    unit = LocalActivationUnit(D, D, [H, 3], prelu, features="official")
    with torch.no_grad():
        unit.key.copy_(wk - wd)
        unit.query.weight.copy_(wq + wd)
        unit.query.bias.copy_(bias)
        unit.inter.copy_(wp)
    q = Q[:, None, :].expand(B, L, D)
    explicit = q @ wq.T + K @ wk.T + (q - K) @ wd.T + (q * K) @ wp.T + bias
    assert torch.allclose(unit.first_layer(Q, K), explicit, atol=1e-5)


def test_din_weights_are_raw_without_softmax_and_normalised_with_it() -> None:
    torch.manual_seed(1)
    att = TargetAttention(D, D, form="mlp", softmax=False, hidden=[H, 3], activation=prelu)
    with torch.no_grad():
        att.score.rest.net[-1].bias.fill_(1.0)  # every raw weight ≈ 1
    pooled, w = att(Q, K, MASK)
    assert torch.all(w[~MASK] == 0)
    assert w[0].sum() > 1.5 and w[2].sum() > 2.0  # intensity kept: Σ w_j grows with the history
    assert torch.allclose(pooled, torch.einsum("bl,bld->bd", w, K), atol=1e-6)
    att.softmax = True
    _, w = att(Q, K, MASK)
    assert torch.allclose(w.sum(1), torch.ones(B), atol=1e-6) and torch.all(w[~MASK] == 0)


def test_padding_changes_nothing_and_empty_history_gives_zeros() -> None:
    att = TargetAttention(D, D, form="mlp", softmax=True, hidden=[H, 3], activation=prelu)
    pooled, _ = att(Q, K, MASK)
    wider = torch.cat([K, torch.randn(B, 2, D)], 1)
    wider_mask = torch.cat([MASK, torch.zeros(B, 2, dtype=torch.bool)], 1)
    assert torch.allclose(att(Q, wider, wider_mask)[0], pooled, atol=1e-6)
    empty = torch.zeros(B, L, dtype=torch.bool)
    pooled, w = att(Q, K, empty)
    assert torch.all(pooled == 0) and torch.all(w == 0) and not torch.isnan(pooled).any()


def test_activations_see_only_valid_positions() -> None:
    seen: list[int] = []

    class Recorder(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(x.shape[0])
            return torch.relu(x)

    unit = LocalActivationUnit(D, D, [H, 3], lambda width, ndim=2: Recorder())
    unit(Q, K, MASK)
    assert seen == [int(MASK.sum())] * 2  # two hidden layers, packed valid positions only


def test_bilinear_softmax_is_dien_eq_9() -> None:
    score = BilinearScore(D, D)
    w = masked_weights(score(Q, K, MASK), MASK, softmax=True)
    logits = torch.einsum("bld,de,be->bl", K, score.weight.weight, Q)
    expected = torch.where(MASK, torch.exp(logits), 0)
    expected = expected / expected.sum(1, keepdim=True)
    assert torch.allclose(w, expected, atol=1e-6)


def test_bad_options_are_one_line() -> None:
    with pytest.raises(ValueError, match="attention features 'cross' is unknown"):
        LocalActivationUnit(D, D, [H], prelu, features="cross")
    with pytest.raises(ValueError, match="attention form 'dot' is unknown"):
        TargetAttention(D, D, form="dot")


class FixedScores(nn.Module):
    """A score module returning a given (B, L) score matrix."""

    def __init__(self, scores: torch.Tensor) -> None:
        super().__init__()
        self.scores = scores

    def forward(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.scores


def test_scale_divides_the_scores_by_the_root_of_the_key_width_before_the_softmax() -> None:
    query, keys = torch.zeros(1, 16), torch.randn(1, 4, 16)  # key width 16: √16 = 4
    mask = torch.tensor([[True, True, True, False]])
    att = TargetAttention(16, 16, form="mlp", softmax=True, hidden=[H], activation=prelu, scale=True)
    att.score = FixedScores(torch.tensor([[4.0, 0.0, -4.0, 8.0]]))
    e = math.e
    expected = torch.tensor([[e, 1.0, 1 / e, 0.0]]) / (e + 1 + 1 / e)  # softmax of [1, 0, −1], masked
    torch.testing.assert_close(att.weights(query, keys, mask), expected)
    att.softmax = False  # without the softmax: the raw scores / 4
    expected = torch.tensor([[1.0, 0.0, -1.0, 0.0]])
    torch.testing.assert_close(att.weights(query, keys, mask), expected)
    att.scale = None
    torch.testing.assert_close(att.weights(query, keys, mask), torch.tensor([[4.0, 0.0, -4.0, 0.0]]))


def test_sigmoid_activation_unit_is_the_official_mlp() -> None:
    unit = LocalActivationUnit(D, D, [H, 3], sigmoid, features="official")
    first = unit.first_layer(Q, K)
    l2, l3 = unit.rest.net[0], unit.rest.net[2]
    explicit = torch.sigmoid(torch.sigmoid(first) @ l2.weight.T + l2.bias) @ l3.weight.T + l3.bias
    scores = unit(Q, K, MASK)
    torch.testing.assert_close(scores[MASK], explicit.squeeze(-1)[MASK])


def test_prelu_query_projection_comes_before_the_features() -> None:
    unit = LocalActivationUnit(D, D, [H, 3], prelu, features="official", query_proj="prelu")
    dense, act = unit.project  # even at equal widths: dense(D) → PReLU with slope 0.1
    assert torch.all(act.weight == 0.1)
    q = dense(Q)
    q = torch.where(q > 0, q, 0.1 * q)
    plain = LocalActivationUnit(D, D, [H, 3], prelu, features="official")
    plain.load_state_dict({k: v for k, v in unit.state_dict().items() if not k.startswith("project")})
    torch.testing.assert_close(unit.first_layer(Q, K), plain.first_layer(q, K))
    assert LocalActivationUnit(D, D, [H], prelu, features="official").project is None
    with pytest.raises(ValueError, match="attention query projection 'tanh' is unknown"):
        LocalActivationUnit(D, D, [H], prelu, query_proj="tanh")
