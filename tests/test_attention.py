"""Target attention against explicit computations (DIN eq. 3, DIEN eq. 9)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ctrbench.nn.activation import PReLU
from ctrbench.nn.attention import BilinearScore, LocalActivationUnit, TargetAttention, masked_weights

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
