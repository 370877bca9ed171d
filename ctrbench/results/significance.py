"""Paired significance tests between two models' test predictions and between their seeds.

* :func:`delong_test` — DeLong, DeLong & Clarke-Pearson (1988), "Comparing the areas under two or more
  correlated receiver operating characteristic curves: a nonparametric approach", Biometrics 44(3),
  computed with the O(n log n) midrank algorithm of Sun & Xu (2014), "Fast implementation of DeLong's
  algorithm for comparing the areas under correlated ROC curves", IEEE Signal Processing Letters 21(11).
* :func:`paired_bootstrap_gauc` — a paired bootstrap over users (Efron & Tibshirani 1993, ch. 13,
  percentile interval) of the difference in GAUC (DIN paper eq. 10).
* :func:`paired_seeds` — per-seed differences of a metric, matched by seed value, with a t interval
  and the paired t-test (Student 1908; ``scipy.stats.ttest_rel``).
* :func:`holm` — Holm (1979), "A simple sequentially rejective multiple test procedure",
  Scandinavian Journal of Statistics 6(2).

Every function here is pure: arrays and records in, numbers out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from ctrbench.metrics import per_group_auc as metrics_per_group_auc

__all__ = [
    "PairedSeeds",
    "Predictions",
    "align",
    "common_seeds",
    "delong_test",
    "holm",
    "load_predictions",
    "midranks",
    "paired_bootstrap_gauc",
    "paired_seeds",
    "per_group_auc",
]


def midranks(x: ArrayLike) -> np.ndarray:
    """1-based ranks of ``x`` with ties given their mean rank (Sun & Xu 2014, Algorithm 1)."""
    v = np.asarray(x, dtype=np.float64).ravel()
    order = np.argsort(v, kind="mergesort")
    s = v[order]
    n = s.size
    if n == 0:
        return np.empty(0)
    new_run = np.empty(n, dtype=bool)
    new_run[0] = True
    new_run[1:] = s[1:] != s[:-1]
    start = np.flatnonzero(new_run)
    end = np.append(start[1:], n)  # exclusive
    mean_rank = (start + 1 + end) / 2.0  # mean of the 1-based ranks start+1 .. end
    ranks = np.empty(n)
    ranks[order] = np.repeat(mean_rank, end - start)
    return ranks


def _structural_components(y: np.ndarray, scores: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """AUC and DeLong's structural components ``V10`` (one per positive) and ``V01`` (one per negative).

    ``V10_i = (1/n) Σ_j ψ(X_i, Y_j)``, ``V01_j = (1/m) Σ_i ψ(X_i, Y_j)`` with ψ = 1, ½, 0 for
    ``X > Y``, ``X = Y``, ``X < Y`` (DeLong et al. 1988, §2), from midranks (Sun & Xu 2014, eq. 9–11):
    ``V10 = (T_Z[pos] − T_X) / n``, ``V01 = 1 − (T_Z[neg] − T_Y) / m``.
    """
    x, yy = scores[y], scores[~y]
    m, n = x.size, yy.size
    tz = midranks(np.concatenate([x, yy]))
    tx, ty = midranks(x), midranks(yy)
    auc = (tz[:m].sum() - m * (m + 1) / 2.0) / (m * n)
    return float(auc), (tz[:m] - tx) / n, 1.0 - (tz[m:] - ty) / m


def _binary_labels(y: ArrayLike, where: str) -> np.ndarray:
    labels = np.asarray(y).ravel()
    if labels.size and not np.isin(labels, (0, 1)).all():
        raise ValueError(f"{where}: labels must be 0/1, found {np.unique(labels)[:5].tolist()}")
    return labels.astype(bool)


def delong_test(
    y: ArrayLike, p_a: ArrayLike, p_b: ArrayLike
) -> tuple[float, float, float, float, float, float]:
    """``(auc_a, auc_b, diff, se, z, p)``: DeLong's test of ``AUC_a = AUC_b`` on the same samples.

    ``diff = auc_a − auc_b``; ``se`` its standard error from the covariance of the structural
    components, ``S = S10/m + S01/n`` (DeLong et al. 1988, eq. 2–5; here with the O(n log n) midrank
    computation of Sun & Xu 2014); ``z = diff / se`` and the two-sided normal ``p``. When ``se`` is 0
    (e.g. a model against itself) ``z`` is 0 and ``p`` is 1 if ``diff`` is 0. NaN everywhere when
    ``y`` holds one class.
    """
    labels = _binary_labels(y, "delong_test")
    a = np.asarray(p_a, dtype=np.float64).ravel()
    b = np.asarray(p_b, dtype=np.float64).ravel()
    if not (labels.size == a.size == b.size):
        raise ValueError(f"delong_test: y, p_a, p_b differ in length: {labels.size}, {a.size}, {b.size}")
    m = int(labels.sum())
    n = labels.size - m
    if m == 0 or n == 0:
        return (math.nan,) * 6
    auc_a, v10_a, v01_a = _structural_components(labels, a)
    auc_b, v10_b, v01_b = _structural_components(labels, b)
    s10 = np.cov(np.vstack([v10_a, v10_b])) if m > 1 else np.zeros((2, 2))
    s01 = np.cov(np.vstack([v01_a, v01_b])) if n > 1 else np.zeros((2, 2))
    s = s10 / m + s01 / n
    var = float(s[0, 0] + s[1, 1] - 2.0 * s[0, 1])
    diff = auc_a - auc_b
    se = math.sqrt(max(var, 0.0))
    if se <= 1e-15:
        z = 0.0 if abs(diff) <= 1e-15 else math.copysign(math.inf, diff)
    else:
        z = diff / se
    p = float(2.0 * stats.norm.sf(abs(z)))
    return auc_a, auc_b, diff, se, z, p


def per_group_auc(
    y: ArrayLike, scores: ArrayLike, groups: ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(group_ids, auc, n)`` per group (:func:`ctrbench.metrics.per_group_auc`), after checking the
    labels are 0/1. GAUC (DIN eq. 10) is ``Σ n_i·AUC_i / Σ n_i`` over the groups with a finite AUC."""
    return metrics_per_group_auc(_binary_labels(y, "per_group_auc"), scores, groups)


def paired_bootstrap_gauc(
    y: ArrayLike,
    p_a: ArrayLike,
    p_b: ArrayLike,
    groups: ArrayLike,
    n_boot: int = 1000,
    seed: int = 0,
) -> tuple[float, float, float, float]:
    """``(diff, ci_low, ci_high, p)`` for ``GAUC_a − GAUC_b`` by a paired bootstrap over users.

    Each resample draws the users (``groups``) with replacement — the same users for both models, so
    the pairing is kept — and recomputes both GAUCs (DIN eq. 10; users with one class count in neither
    sum). A user drawn k times counts k times, so a resample's GAUC is exactly
    ``Σ k_i·n_i·AUC_i / Σ k_i·n_i`` over the per-user AUCs computed once (:func:`per_group_auc`).
    ``diff`` is the difference on the data as given; the interval is the 2.5/97.5 percentile interval
    of the resampled differences (Efron & Tibshirani 1993, §13.3); ``p`` the two-sided bootstrap
    p-value ``min(1, 2·(min(#{d* ≤ 0}, #{d* ≥ 0}) + 1) / (B + 1))`` — the smallest level at which
    the percentile interval excludes 0. NaN everywhere when no user has both classes.
    """
    if n_boot < 1:
        raise ValueError(f"paired_bootstrap_gauc: n_boot must be at least 1, got {n_boot}")
    _, auc_a, weight = per_group_auc(y, p_a, groups)
    _, auc_b, _ = per_group_auc(y, p_b, groups)
    valid = np.isfinite(auc_a)
    if not valid.any():
        return (math.nan,) * 4
    w = np.where(valid, weight, 0.0)
    wa = np.where(valid, weight * np.nan_to_num(auc_a), 0.0)
    wb = np.where(valid, weight * np.nan_to_num(auc_b), 0.0)
    diff = float(wa.sum() / w.sum() - wb.sum() / w.sum())
    users = w.size
    rng = np.random.default_rng(seed)
    diffs = np.empty(n_boot)
    chunk = max(1, 4_000_000 // users)  # resamples per batch: bounded memory for 10^5–10^6 users
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        idx = rng.integers(0, users, size=(stop - start, users))
        den = w[idx].sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            diffs[start:stop] = (wa[idx].sum(axis=1) - wb[idx].sum(axis=1)) / den
    diffs = diffs[np.isfinite(diffs)]  # a resample without any user having both classes
    if diffs.size == 0:
        return diff, math.nan, math.nan, math.nan
    low, high = np.percentile(diffs, [2.5, 97.5])
    tail = min(int((diffs <= 0).sum()), int((diffs >= 0).sum()))
    p = min(1.0, 2.0 * (tail + 1) / (diffs.size + 1))
    return diff, float(low), float(high), p


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm–Bonferroni step-down adjusted p-values (Holm 1979), in the input order.

    With the m finite p-values sorted ascending, ``p̃_(i) = max_{j ≤ i} min(1, (m − j + 1)·p_(j))``;
    rejecting where ``p̃ ≤ α`` controls the family-wise error at α. NaN entries stay NaN and do not
    count in m.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    m = finite.size
    if m == 0:
        return out.tolist()
    order = finite[np.argsort(p[finite], kind="mergesort")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out.tolist()


@dataclass
class Predictions:
    """A job's test predictions (``predictions.npz``), ordered by row index (``test_row``)."""

    label: np.ndarray
    prob: np.ndarray
    group: np.ndarray
    row: np.ndarray


def load_predictions(path: str | Path) -> Predictions:
    """The ``test_*`` arrays of a ``predictions.npz`` (read as data: ``allow_pickle=False``), sorted by
    ``test_row``. Raises ``ValueError`` naming the file and what is wrong when it cannot be used."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: np.asarray(npz[f"test_{k}"]).ravel() for k in ("label", "prob", "group", "row")}
    except KeyError as exc:
        raise ValueError(f"{path}: missing array {exc.args[0]!s} (needs test_label, test_prob, ...)") from exc
    except (OSError, ValueError, EOFError) as exc:
        raise ValueError(f"{path}: unreadable predictions ({exc})") from exc
    sizes = {k: v.size for k, v in arrays.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"{path}: test arrays differ in length: {sizes}")
    order = np.argsort(arrays["row"], kind="mergesort")
    return Predictions(**{k: v[order] for k, v in arrays.items()})


def align(a: Predictions, b: Predictions) -> str | None:
    """Why two jobs' predictions cannot be paired row by row, or None when they can: the same test rows
    (by row index, never position) with the same labels."""
    if a.row.size != b.row.size or not np.array_equal(a.row, b.row):
        return "different test rows"
    if np.unique(a.row).size != a.row.size:
        return "repeated test row index"
    if not np.array_equal(a.label.astype(bool), b.label.astype(bool)):
        return "different test labels"
    return None


@dataclass
class PairedSeeds:
    """Seed-by-seed comparison of one metric between a row and its reference row (row − reference).

    ``reason`` says why the rows cannot be paired (then the numbers are NaN); ``seeds`` are the
    common seed values, ``diffs`` the per-seed differences in that order.
    """

    seeds: list[Any] = field(default_factory=list)
    diffs: list[float] = field(default_factory=list)
    mean: float = math.nan
    ci_low: float = math.nan
    ci_high: float = math.nan
    p: float = math.nan
    wins: int = 0
    reason: str | None = None

    @property
    def n(self) -> int:
        return len(self.diffs)


def _seed_map(records: Sequence[Mapping[str, Any]]) -> dict[Any, Mapping[str, Any]]:
    """``ok`` records by seed value (the first per seed, in the given order)."""
    out: dict[Any, Mapping[str, Any]] = {}
    for record in records:
        seed = record.get("seed")
        if record.get("status") == "ok" and seed is not None:
            out.setdefault(seed, record)
    return out


def _data_fingerprint(record: Mapping[str, Any]) -> Any:
    fp = record.get("fingerprint")
    return fp.get("data") if isinstance(fp, Mapping) else None


def common_seeds(
    row_records: Sequence[Mapping[str, Any]], ref_records: Sequence[Mapping[str, Any]]
) -> tuple[list[tuple[Any, Mapping[str, Any], Mapping[str, Any]]], str | None]:
    """``[(seed, row record, reference record)]`` matched by seed value, and why they cannot be
    paired (None when they can): a seed whose two records have different data fingerprints."""
    mine, theirs = _seed_map(row_records), _seed_map(ref_records)
    seeds = sorted(set(mine) & set(theirs), key=lambda s: (str(type(s)), s))
    pairs = [(s, mine[s], theirs[s]) for s in seeds]
    for seed, a, b in pairs:
        if _data_fingerprint(a) != _data_fingerprint(b):
            return pairs, f"different data fingerprint (seed {seed})"
    return pairs, None


def paired_seeds(
    row_records: Sequence[Mapping[str, Any]],
    ref_records: Sequence[Mapping[str, Any]],
    metric: str,
    predictions: Mapping[str, Predictions | None] | None = None,
) -> PairedSeeds:
    """The per-seed differences ``test_<metric>(row) − test_<metric>(reference)``, matched by seed VALUE.

    Mean difference with its 95% t interval (``mean ± t_{0.975, k−1}·sd/√k``), the paired t-test p
    (``scipy.stats.ttest_rel``; 1.0 when every difference is 0) and the number of seeds where the row
    is better (wins). Cannot pair (``reason`` set): fewer than 2 common ``ok`` seeds, a different data
    fingerprint, or — where ``predictions`` (job dir → :class:`Predictions` or None) has both jobs of
    a seed — different test rows.
    """
    pairs, reason = common_seeds(row_records, ref_records)
    if reason is None and predictions is not None:
        for seed, a, b in pairs:
            pa = predictions.get(str(a.get("job_dir")))
            pb = predictions.get(str(b.get("job_dir")))
            if pa is not None and pb is not None and align(pa, pb) is not None:
                reason = f"{align(pa, pb)} (seed {seed})"
                break
    values = []
    for seed, a, b in pairs:
        try:
            va, vb = float(a.get(f"test_{metric}")), float(b.get(f"test_{metric}"))
        except (TypeError, ValueError):
            continue
        if math.isfinite(va) and math.isfinite(vb):
            values.append((seed, va, vb))
    if reason is None and len(values) < 2:
        found = ", ".join(str(v[0]) for v in values) or "none"
        reason = f"fewer than 2 common seeds (common: {found})"
    result = PairedSeeds(seeds=[v[0] for v in values], diffs=[v[1] - v[2] for v in values], reason=reason)
    if reason is not None:
        return result
    d = np.array(result.diffs)
    k = d.size
    result.mean = float(d.mean())
    sd = float(d.std(ddof=1))
    half = float(stats.t.ppf(0.975, k - 1)) * sd / math.sqrt(k)
    result.ci_low, result.ci_high = result.mean - half, result.mean + half
    result.wins = int((d > 0).sum())
    if sd == 0.0:
        result.p = 1.0 if result.mean == 0.0 else math.nan
    else:
        result.p = float(stats.ttest_rel([v[1] for v in values], [v[2] for v in values]).pvalue)
    return result
