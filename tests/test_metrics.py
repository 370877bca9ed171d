from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ctrbench.metrics import auc, evaluate, gauc, logloss, rela_impr


def _gauc_loop(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> float:
    """DIN eq. (10) the slow way: one sklearn AUC per user, weighted by impressions."""
    num = den = 0.0
    for g in np.unique(groups):
        m = groups == g
        if np.unique(labels[m]).size < 2:
            continue
        num += m.sum() * roc_auc_score(labels[m], scores[m])
        den += m.sum()
    return num / den if den else math.nan


def test_gauc_hand_example_with_tie_and_single_class_user() -> None:
    # user a: labels 1,0,1,0 scores .9,.3,.5,.5 → pos {.9,.5} vs neg {.3,.5}:
    #         pairs 1 + 1 + 1 + ½ (tie .5 = .5) = 3.5 of 4 → AUC_a = 0.875, 4 impressions
    # user b: labels 0,1,0 scores .8,.6,.2 → pos {.6} vs neg {.8,.2}: 0 + 1 = 1 of 2
    #         → AUC_b = 0.5, 3 impressions
    # user c: labels 1,1 → one class only: skipped (in neither sum)
    # GAUC = (4·0.875 + 3·0.5) / (4 + 3) = 5 / 7
    groups = np.array(["a", "b", "c", "a", "b", "a", "c", "b", "a"])
    labels = np.array([1, 0, 1, 0, 1, 1, 1, 0, 0])
    scores = np.array([0.9, 0.8, 0.1, 0.3, 0.6, 0.5, 0.7, 0.2, 0.5])
    assert gauc(labels, scores, groups) == pytest.approx(5 / 7, abs=1e-12)


def test_gauc_skipped_user_changes_nothing() -> None:
    labels = np.array([1, 0, 1, 0])
    scores = np.array([0.9, 0.1, 0.2, 0.8])
    base = gauc(labels, scores, np.array([0, 0, 1, 1]))
    groups = np.array([0, 0, 1, 1, 2, 2, 2])
    with_single = gauc(np.append(labels, [1, 1, 1]), np.append(scores, [0.0, 0.0, 0.0]), groups)
    assert base == pytest.approx(0.5)  # users 0 and 1: AUC 1 and 0, two impressions each
    assert with_single == pytest.approx(base)


@pytest.mark.parametrize("seed", range(5))
def test_gauc_equals_per_user_sklearn_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 3000
    groups = rng.integers(0, 300, size=n)
    labels = (rng.random(n) < 0.3).astype(int)
    scores = np.round(rng.random(n) + 0.3 * labels, 1)  # coarse rounding ⇒ many ties
    assert gauc(labels, scores, groups) == pytest.approx(_gauc_loop(labels, scores, groups), abs=1e-12)
    # the group ids' type and the sample order do not matter
    perm = rng.permutation(n)
    str_groups = np.array([f"u{g}" for g in groups])
    shuffled = gauc(labels[perm], scores[perm], str_groups[perm])
    assert shuffled == pytest.approx(gauc(labels, scores, groups), abs=1e-12)


def test_gauc_nan_when_no_user_has_both_classes() -> None:
    assert math.isnan(gauc([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4], [0, 0, 1, 1]))
    assert math.isnan(gauc([], [], []))


def test_gauc_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError):
        gauc([0, 1], [0.1, 0.2, 0.3], [0, 0])


def test_auc_hand_value_and_single_class() -> None:
    # pos {.8,.4} vs neg {.4,.1}: 1 + 1 + ½ + 1 = 3.5 of 4
    assert auc([1, 1, 0, 0], [0.8, 0.4, 0.4, 0.1]) == pytest.approx(0.875)
    assert math.isnan(auc([1, 1, 1], [0.1, 0.2, 0.3]))


def test_rela_impr_din_table3() -> None:
    # DIN Table 3, Amazon: LR 0.7742 vs BaseModel 0.8624
    #   (0.2742 / 0.3624 − 1)·100 = (0.756623 − 1)·100 = −24.3377 %  (the paper prints −24.34%)
    assert rela_impr(0.7742, 0.8624) == pytest.approx(-24.3377, abs=1e-3)
    # DIN 0.8818 vs BaseModel 0.8624: (0.3818 / 0.3624 − 1)·100 = +5.3532 %  (paper: 5.35%)
    assert rela_impr(0.8818, 0.8624) == pytest.approx(5.3532, abs=1e-3)
    assert rela_impr(0.5, 0.8) == pytest.approx(-100.0)
    assert rela_impr(0.8, 0.8) == 0.0
    assert math.isnan(rela_impr(0.7, 0.5))
    assert math.isnan(rela_impr(math.nan, 0.8))


def test_logloss_hand_value() -> None:
    # −(ln 0.8 + ln(1 − 0.4)) / 2 = (0.2231436 + 0.5108256) / 2 = 0.3669846
    assert logloss([1, 0], [0.8, 0.4]) == pytest.approx(0.3669846, abs=1e-6)
    # one class only is still scored: −ln 0.5
    assert logloss([1, 1], [0.5, 0.5]) == pytest.approx(math.log(2))
    # a hard wrong prediction is clipped, not infinite
    assert math.isfinite(logloss([1], [0.0]))


def test_evaluate_applies_sigmoid_to_logits() -> None:
    labels = np.array([1, 0, 1, 0, 1, 0])
    logits = np.array([2.0, -1.0, 0.0, 0.5, -3.0, -2.0])
    groups = np.array([0, 0, 0, 1, 1, 1])
    out = evaluate(labels, logits, groups)
    assert set(out) == {"auc", "gauc", "logloss"}
    probs = 1 / (1 + np.exp(-logits))
    assert out["logloss"] == pytest.approx(logloss(labels, probs))
    assert out["auc"] == pytest.approx(roc_auc_score(labels, probs))
    assert out["gauc"] == pytest.approx(_gauc_loop(labels, probs, groups))
    assert evaluate([1, 0], [0.0, 0.0], [0, 0])["logloss"] == pytest.approx(math.log(2))
