"""Paired significance tests: DeLong, paired bootstrap of GAUC, seeds paired by value, Holm."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from scipy import stats

from ctrbench.metrics import auc, gauc
from ctrbench.results.significance import (
    Predictions,
    align,
    delong_test,
    holm,
    load_predictions,
    midranks,
    paired_bootstrap_gauc,
    paired_seeds,
    per_group_auc,
)


def _psi(x: float, y: float) -> float:
    return 1.0 if x > y else 0.5 if x == y else 0.0


def _brute_delong(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """DeLong et al. (1988) §2 written out literally: O(m·n) kernel sums, then S10/m + S01/n."""
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    m, n = pos.size, neg.size
    comps = []
    for s in (a, b):
        v10 = np.array([sum(_psi(s[i], s[j]) for j in neg) / n for i in pos])
        v01 = np.array([sum(_psi(s[i], s[j]) for i in pos) / m for j in neg])
        comps.append((v10, v01))
    s10 = np.cov(np.vstack([comps[0][0], comps[1][0]]))
    s01 = np.cov(np.vstack([comps[0][1], comps[1][1]]))
    s = s10 / m + s01 / n
    return float(comps[0][0].mean() - comps[1][0].mean()), float(s[0, 0] + s[1, 1] - 2 * s[0, 1])


def test_midranks_ties_get_mean_rank() -> None:
    assert midranks([0.3, 0.1, 0.3, 0.2, 0.3]).tolist() == [4.0, 1.0, 4.0, 2.0, 4.0]


@pytest.mark.parametrize("seed", range(8))
def test_delong_matches_brute_force_structural_components(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(6, 40))
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    # rounded scores: many ties, which the midrank algorithm must count as ½
    a = np.round(rng.normal(size=n) + y, 1)
    b = np.round(0.5 * a + rng.normal(size=n), 1) if seed % 2 else np.round(rng.random(n), 1)
    auc_a, auc_b, diff, se, z, p = delong_test(y, a, b)
    want_diff, want_var = _brute_delong(y, a, b)
    assert auc_a == pytest.approx(auc(y, a), abs=1e-12)
    assert auc_b == pytest.approx(auc(y, b), abs=1e-12)
    assert diff == pytest.approx(want_diff, abs=1e-12)
    assert se**2 == pytest.approx(want_var, abs=1e-12)
    assert p == pytest.approx(2 * stats.norm.sf(abs(want_diff) / math.sqrt(want_var)), abs=1e-12)


def test_delong_worked_example_by_hand() -> None:
    """Hand-computed worked example (DeLong et al. 1988 eq. 2–5), 3 positives and 2 negatives.

    A: positives .9 .6 .4, negatives .5 .2 → V10_A = (1, 1, ½), V01_A = (⅔, 1), AUC_A = 5/6.
    B: positives .8 .3 .55, negatives .6 .1 → V10_B = (1, ½, ½), V01_B = (⅓, 1), AUC_B = 2/3.
    S10 = [[1/12, 1/24], [1/24, 1/12]], S01 = [[1/18, 1/9], [1/9, 2/9]];
    Var(diff) = (1/12 + 1/12 − 2/24)/3 + (1/18 + 2/9 − 2/9)/2 = 1/36 + 1/36 = 1/18,
    so z = (1/6)·√18 = 1/√2 and p = 2·(1 − Φ(0.7071)) = 0.4795.
    """
    y = [1, 1, 1, 0, 0]
    a = [0.9, 0.6, 0.4, 0.5, 0.2]
    b = [0.8, 0.3, 0.55, 0.6, 0.1]
    auc_a, auc_b, diff, se, z, p = delong_test(y, a, b)
    assert (auc_a, auc_b) == (pytest.approx(5 / 6), pytest.approx(2 / 3))
    assert diff == pytest.approx(1 / 6)
    assert se == pytest.approx(1 / math.sqrt(18))
    assert z == pytest.approx(1 / math.sqrt(2))
    assert p == pytest.approx(0.47950, abs=1e-5)


def test_delong_model_against_itself_has_p_one() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 500)
    s = rng.random(500) + 0.3 * y
    auc_a, auc_b, diff, se, z, p = delong_test(y, s, s)
    assert auc_a == auc_b and diff == 0.0 and z == 0.0 and p == 1.0


def test_delong_one_class_is_nan_and_bad_labels_are_named() -> None:
    assert all(math.isnan(v) for v in delong_test([1, 1], [0.1, 0.2], [0.3, 0.4]))
    with pytest.raises(ValueError, match="labels must be 0/1"):
        delong_test([0, 2], [0.1, 0.2], [0.3, 0.4])


def test_per_group_auc_gives_metrics_gauc() -> None:
    rng = np.random.default_rng(0)
    n = 3000
    groups = rng.integers(0, 150, n) * 7  # sparse ids
    y = rng.integers(0, 2, n)
    s = np.round(rng.random(n) + 0.2 * y, 2)
    _, per_user, weight = per_group_auc(y, s, groups)
    ok = np.isfinite(per_user)
    assert np.sum(weight[ok] * per_user[ok]) / np.sum(weight[ok]) == pytest.approx(
        gauc(y, s, groups), abs=1e-12
    )


def _users(rng: np.random.Generator, n_users: int, delta_a: float, delta_b: float, rho: float):
    sizes = rng.integers(4, 16, n_users)
    groups = np.repeat(np.arange(n_users), sizes)
    y = rng.integers(0, 2, groups.size)
    e1, e2 = rng.normal(size=(2, groups.size))
    a = delta_a * y + e1
    b = delta_b * y + rho * e1 + math.sqrt(1 - rho**2) * e2
    return y, a, b, groups


def test_bootstrap_diff_is_the_gauc_difference_and_a_resample_is_exact() -> None:
    rng = np.random.default_rng(1)
    y, a, b, groups = _users(rng, 60, 1.0, 0.5, 0.5)
    diff, low, high, p = paired_bootstrap_gauc(y, a, b, groups, n_boot=200, seed=0)
    assert diff == pytest.approx(gauc(y, a, groups) - gauc(y, b, groups), abs=1e-12)
    assert low <= diff <= high and 0 < p <= 1
    # the weighted-sum form of one resample equals GAUC over the materialized resample (copies as new users)
    ids, auc_a, w = per_group_auc(y, a, groups)
    pick = np.random.default_rng(5).integers(0, ids.size, ids.size)
    rows = np.concatenate([np.flatnonzero(groups == ids[u]) for u in pick])
    new_groups = np.repeat(np.arange(pick.size), [np.sum(groups == ids[u]) for u in pick])
    ok = np.isfinite(auc_a[pick])
    fast = np.sum((w * np.nan_to_num(auc_a))[pick][ok]) / np.sum(w[pick][ok])
    assert fast == pytest.approx(gauc(y[rows], a[rows], new_groups), abs=1e-12)


def test_bootstrap_same_model_gives_p_one_and_zero_interval() -> None:
    rng = np.random.default_rng(2)
    y, a, _, groups = _users(rng, 40, 1.0, 0.5, 0.5)
    assert paired_bootstrap_gauc(y, a, a, groups, n_boot=100) == (0.0, 0.0, 0.0, 1.0)


def test_bootstrap_interval_covers_the_true_difference_about_95_percent() -> None:
    """200 simulated test sets of 150 users; scores ``δ·y + noise`` with N(0, 1) noise, so each user's
    expected AUC — and the population GAUC — is Φ(δ/√2) whatever the user's size: the true difference
    is Φ(1/√2) − Φ(0.6/√2). The percentile interval should cover it in ~95% of the sets."""
    truth = stats.norm.cdf(1.0 / math.sqrt(2)) - stats.norm.cdf(0.6 / math.sqrt(2))
    rng = np.random.default_rng(2024)
    covered = 0
    reps = 200
    for rep in range(reps):
        y, a, b, groups = _users(rng, 150, 1.0, 0.6, 0.6)
        _, low, high, _ = paired_bootstrap_gauc(y, a, b, groups, n_boot=400, seed=rep)
        covered += low <= truth <= high
    # binomial sd at 95% over 200 sets ≈ 1.5 points: accept 89%..99%
    assert 0.89 <= covered / reps <= 0.99, covered / reps


def test_bootstrap_is_fast_on_movielens_sized_sets() -> None:
    rng = np.random.default_rng(0)
    y, a, b, groups = _users(rng, 2000, 1.0, 0.8, 0.5)  # ~19k rows, 2000 users
    start = time.perf_counter()
    paired_bootstrap_gauc(y, a, b, groups, n_boot=1000)
    assert time.perf_counter() - start < 3.0


def test_holm_hand_computed() -> None:
    # sorted 0.005, 0.01, 0.03, 0.04 → ×4, ×3, ×2, ×1 = 0.02, 0.03, 0.06, 0.04 → running max 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # clipped at 1, NaN kept and not counted (m = 2): 0.3×2 = 0.6, 0.5×1 = 0.5 → 0.6
    out = holm([0.5, math.nan, 0.3])
    assert out[0] == pytest.approx(0.6) and math.isnan(out[1]) and out[2] == pytest.approx(0.6)
    assert holm([0.9, 0.8]) == [1.0, 1.0]  # 0.8×2 clipped to 1, then the running max
    assert holm([]) == []


def _rec(seed: object, auc_: float, job: str, data: str = "d1", gauc_: float = 0.6) -> dict:
    return {
        "status": "ok",
        "seed": seed,
        "test_auc": auc_,
        "test_gauc": gauc_,
        "job_dir": job,
        "fingerprint": {"data": data, "code": {}, "device": "cpu"},
    }


def test_paired_seeds_matches_by_seed_value_not_position() -> None:
    row = [_rec(3, 0.73, "r3"), _rec(1, 0.71, "r1"), _rec(2, 0.70, "r2"), _rec(9, 0.99, "r9")]
    ref = [_rec(1, 0.70, "b1"), _rec(2, 0.71, "b2"), _rec(3, 0.70, "b3"), _rec(4, 0.5, "b4")]
    res = paired_seeds(row, ref, "auc")
    assert res.reason is None and res.seeds == [1, 2, 3]
    assert res.diffs == pytest.approx([0.01, -0.01, 0.03])
    assert res.wins == 2
    d = np.array([0.01, -0.01, 0.03])
    half = stats.t.ppf(0.975, 2) * d.std(ddof=1) / math.sqrt(3)
    assert res.mean == pytest.approx(0.01)
    assert (res.ci_low, res.ci_high) == (pytest.approx(0.01 - half), pytest.approx(0.01 + half))
    assert res.p == pytest.approx(stats.ttest_1samp(d, 0).pvalue)
    shuffled = paired_seeds(row[::-1], ref[::-1], "auc")
    assert shuffled.diffs == res.diffs and shuffled.p == res.p


def test_paired_seeds_cannot_pair_reasons() -> None:
    ref = [_rec(1, 0.7, "b1"), _rec(2, 0.7, "b2")]
    one = paired_seeds([_rec(1, 0.8, "r1"), _rec(5, 0.8, "r5")], ref, "auc")
    assert one.reason == "fewer than 2 common seeds (common: 1)" and math.isnan(one.mean)
    failed = [_rec(1, 0.8, "r1"), {**_rec(2, 0.8, "r2"), "status": "failed"}]
    assert paired_seeds(failed, ref, "auc").reason.startswith("fewer than 2 common seeds")
    other = paired_seeds([_rec(1, 0.8, "r1", data="d2"), _rec(2, 0.8, "r2", data="d2")], ref, "auc")
    assert other.reason == "different data fingerprint (seed 1)"
    lab = np.array([0, 1, 0], dtype=np.int8)
    pr = np.array([0.1, 0.2, 0.3], dtype=np.float32)
    grp = np.zeros(3, dtype=np.int64)
    same = Predictions(lab, pr, grp, np.array([0, 1, 2]))
    moved = Predictions(lab, pr, grp, np.array([0, 1, 5]))
    preds = {"r1": same, "r2": moved, "b1": same, "b2": same}
    rows = paired_seeds([_rec(1, 0.8, "r1"), _rec(2, 0.8, "r2")], ref, "auc", preds)
    assert rows.reason == "different test rows (seed 2)"


def test_align_and_load_predictions_sort_by_row_index(tmp_path) -> None:
    path = tmp_path / "predictions.npz"
    np.savez(
        path,
        test_label=np.array([1, 0, 1], dtype=np.int8),
        test_prob=np.array([0.9, 0.2, 0.7], dtype=np.float32),
        test_group=np.array([5, 5, 6], dtype=np.int64),
        test_row=np.array([2, 0, 1], dtype=np.int64),
        val_label=np.array([1], dtype=np.int8),
        val_prob=np.array([0.5], dtype=np.float32),
        val_group=np.array([1], dtype=np.int64),
        val_row=np.array([0], dtype=np.int64),
        epoch=np.array(2),
    )
    p = load_predictions(path)
    assert p.row.tolist() == [0, 1, 2] and p.label.tolist() == [0, 1, 1]
    assert p.prob.tolist() == pytest.approx([0.2, 0.7, 0.9])
    assert align(p, p) is None
    flipped = Predictions(1 - p.label, p.prob, p.group, p.row)
    assert align(p, flipped) == "different test labels"
    np.savez(tmp_path / "bad.npz", test_label=np.array([1]))
    with pytest.raises(ValueError, match="bad.npz: missing array test_prob"):
        load_predictions(tmp_path / "bad.npz")
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(ValueError, match="junk.npz: unreadable predictions"):
        load_predictions(tmp_path / "junk.npz")


def test_delong_auc_on_hanley_mcneil_published_ct_ratings() -> None:
    """Hanley & McNeil (1982), Radiology 143:29–36, Table 1: five-point ratings of 109 CT images
    (58 normal: 33, 6, 6, 11, 2 per rating 1..5; 51 abnormal: 3, 2, 2, 11, 33), published area
    0.893. A test set with heavy ties: ties count one half, as in the Mann–Whitney statistic."""
    neg = np.repeat([1, 2, 3, 4, 5], [33, 6, 6, 11, 2])
    pos = np.repeat([1, 2, 3, 4, 5], [3, 2, 2, 11, 33])
    y = np.r_[np.zeros(neg.size), np.ones(pos.size)]
    scores = np.r_[neg, pos].astype(float)
    flipped = np.r_[neg, 6 - pos].astype(float)  # the abnormal ratings mirrored: a worse reader
    auc_a, auc_b, diff, se, z, p = delong_test(y, scores, flipped)
    assert round(auc_a, 3) == 0.893
    assert diff == pytest.approx(auc_a - auc_b) and se > 0 and p < 1e-6
