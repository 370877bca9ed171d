"""Evaluation metrics: AUC, user-weighted GAUC (DIN eq. 10), logloss and RelaImpr (DIN eq. 11).

All functions take numpy-compatible arrays and return plain Python floats.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import expit
from sklearn.metrics import log_loss, roc_auc_score

__all__ = ["auc", "evaluate", "gauc", "logloss", "rela_impr"]


def auc(labels: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve; NaN when ``labels`` hold fewer than two classes."""
    y = np.asarray(labels).ravel()
    if np.unique(y).size < 2:
        return math.nan
    return float(roc_auc_score(y, np.asarray(scores, dtype=np.float64).ravel()))


def per_group_auc(
    labels: ArrayLike, scores: ArrayLike, groups: ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(group_ids, auc, n)`` per group, sorted by group id: each group's AUC (NaN for a group whose
    samples are all one class) and its number of impressions.

    Written here rather than as a per-user ``roc_auc_score`` loop: evaluation sets hold 10^5–10^6
    users and a Python-level loop over them is far too slow. Instead, one ``lexsort`` on
    (group, score) gives every sample its rank inside its group (tied scores get the average rank),
    and each group's AUC is the Mann–Whitney statistic ``(R_pos − P(P+1)/2) / (P·N)`` — exactly
    what ``roc_auc_score`` computes, ties counting one half.
    """
    y = np.asarray(labels).ravel().astype(bool)
    s = np.asarray(scores, dtype=np.float64).ravel()
    g = np.asarray(groups).ravel()
    if not (y.size == s.size == g.size):
        raise ValueError(f"labels, scores and groups differ in length: {y.size}, {s.size}, {g.size}")
    ids, codes = np.unique(g, return_inverse=True)
    codes = codes.ravel()
    if y.size == 0:
        return ids, np.empty(0), np.empty(0)
    order = np.lexsort((s, codes))  # by group, then by score
    y, s, codes = y[order], s[order], codes[order]
    n = y.size

    # Runs of equal (group, score) are ties; each member gets the run's mean position.
    new_run = np.empty(n, dtype=bool)
    new_run[0] = True
    new_run[1:] = (codes[1:] != codes[:-1]) | (s[1:] != s[:-1])
    run_id = np.cumsum(new_run) - 1
    run_start = np.flatnonzero(new_run)
    run_end = np.append(run_start[1:], n) - 1
    mean_pos = ((run_start + run_end) / 2.0)[run_id]

    # Rank inside the group (1-based) = mean position − position of the group's first sample + 1.
    group_start = np.searchsorted(codes, np.arange(ids.size))
    rank = mean_pos - group_start[codes] + 1.0
    n_all = np.bincount(codes, minlength=ids.size).astype(np.float64)
    n_pos = np.bincount(codes, weights=y.astype(np.float64), minlength=ids.size)
    n_neg = n_all - n_pos
    rank_pos = np.bincount(codes, weights=np.where(y, rank, 0.0), minlength=ids.size)
    with np.errstate(divide="ignore", invalid="ignore"):
        auc_i = (rank_pos - n_pos * (n_pos + 1.0) / 2.0) / (n_pos * n_neg)
    auc_i[(n_pos == 0) | (n_neg == 0)] = np.nan
    return ids, auc_i, n_all


def gauc(labels: ArrayLike, scores: ArrayLike, groups: ArrayLike) -> float:
    """User-weighted AUC, DIN eq. (10): ``Σ_i n_i·AUC_i / Σ_i n_i`` over users ``i``
    (:func:`per_group_auc`).

    ``n_i`` is user ``i``'s number of impressions. Users whose samples all have one class have no
    AUC and are left out of both sums. NaN when no user has both classes.
    """
    _, per_user, weights = per_group_auc(labels, scores, groups)
    valid = ~np.isnan(per_user)
    if not valid.any():
        return math.nan
    return float(np.sum(weights[valid] * per_user[valid]) / np.sum(weights[valid]))


def logloss(labels: ArrayLike, probs: ArrayLike) -> float:
    """Binary cross-entropy (mean negative log-likelihood) via sklearn's ``log_loss``.

    Both classes are passed explicitly, so a batch with a single class is still scored; sklearn
    clips probabilities to ``[eps, 1 − eps]`` (machine epsilon of the input dtype) before the log.
    """
    y = np.asarray(labels).ravel()
    if y.size == 0:
        return math.nan
    p = np.asarray(probs, dtype=np.float64).ravel()
    return float(log_loss(y, p, labels=[0, 1]))


def rela_impr(auc_measured: float, auc_base: float) -> float:
    """RelaImpr in percent, DIN eq. (11): ``((AUC_m − 0.5) / (AUC_b − 0.5) − 1) · 100``.

    NaN when either value is missing or the base is a random guesser (``AUC_b = 0.5``).
    """
    m, b = float(auc_measured), float(auc_base)
    if math.isnan(m) or math.isnan(b) or b == 0.5:
        return math.nan
    return ((m - 0.5) / (b - 0.5) - 1.0) * 100.0


def evaluate(labels: ArrayLike, logits: ArrayLike, groups: ArrayLike) -> dict[str, float]:
    """``{"auc", "gauc", "logloss"}`` of model ``logits`` (the sigmoid is applied here)."""
    y = np.asarray(labels).ravel()
    z = np.asarray(logits, dtype=np.float64).ravel()
    probs = expit(z)
    return {"auc": auc(y, z), "gauc": gauc(y, z, groups), "logloss": logloss(y, probs)}
