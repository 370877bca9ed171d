"""Learning curves of a sweep: one line per configuration, mean ± std over seeds, per epoch.

With a regularizer sweep this is DIN Fig. 4 (test AUC over epochs, without regularization
over-fitting after the first epoch); train loss is drawn beside it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ctrbench.results.plotting import pyplot
from ctrbench.results.summary import group_records, row_labels, summary_row

CURVE_METRICS = ("train_loss", "val_logloss", "val_auc", "val_gauc", "test_auc", "lr")  # lr: with a schedule
AUX_PANEL = "target and auxiliary loss"  # DIEN Fig. 2: train_ctr_loss (solid) and train_aux (dashed)


def curve_series(
    records: Sequence[Mapping[str, Any]], metric: str
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Row label → (epochs, mean, std) of ``metric`` over the row's ``ok`` seeds (common epochs)."""
    groups = group_records(records)
    labels = row_labels([summary_row(g) for g in groups])
    out = {}
    for label, members in zip(labels, groups, strict=True):
        histories = [r.get("epochs") or [] for r in members if r.get("status") == "ok"]
        n = min((len(h) for h in histories), default=0)
        values = np.array(
            [[float(h[e].get(metric, math.nan)) for e in range(n)] for h in histories], dtype=np.float64
        )
        if n == 0 or np.isnan(values).all():
            continue
        std = values.std(axis=0, ddof=1) if len(values) > 1 else np.zeros(n)
        out[label] = (np.arange(1, n + 1), values.mean(axis=0), std)
    return out


def plot_curves(
    records: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str],
    metrics: Sequence[str] = CURVE_METRICS,
) -> Path | None:
    """Write a PNG with one panel per metric (metrics no run has are left out), plus DIEN Fig. 2's
    panel — the target and the auxiliary loss over epochs on one plot — when runs have an
    auxiliary loss; None (nothing written) when no run has an epoch history. Epochs count from 1 on
    the x axis (records store them from 0); when every run has one epoch, each value is a point."""
    series = {m: curve_series(records, m) for m in metrics}
    series = {m: s for m, s in series.items() if s}
    aux = curve_series(records, "train_aux")
    if aux:
        series[AUX_PANEL] = {}
    metrics = list(series)
    if not series:
        return None
    ms = 3 if any(len(x[0]) > 1 for s in series.values() for x in s.values()) else 7  # one epoch: points
    plt = pyplot()
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 3.8), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        if metric == AUX_PANEL:
            target = curve_series(records, "train_ctr_loss")
            for label, (epochs, mean, _) in aux.items():
                (line,) = ax.plot(epochs, mean, "--", marker="o", ms=ms, label=f"{label} aux")
                if label in target:
                    ax.plot(
                        *target[label][:2],
                        "-",
                        marker="o",
                        ms=ms,
                        color=line.get_color(),
                        label=f"{label} target",
                    )
            ax.set_xlabel("epoch")
            ax.set_title(metric)
            ax.grid(alpha=0.3)
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.legend(fontsize=7)
            continue
        for label, (epochs, mean, std) in series[metric].items():
            (line,) = ax.plot(epochs, mean, marker="o", ms=ms, label=label)
            ax.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.15, lw=0)
        ax.set_xlabel("epoch")
        ax.set_title(metric.replace("_", " "))
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    axes[0][-1].legend(fontsize=8, loc="best")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
