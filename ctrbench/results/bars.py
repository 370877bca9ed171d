"""RelaImpr bar chart of a sweep (DIN eq. 11): one bar per configuration, seed std as error bars."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ctrbench.metrics import rela_impr
from ctrbench.results.plotting import pyplot
from ctrbench.results.summary import _base_row, group_records, row_labels, summary_row


def relaimpr_series(
    records: Sequence[Mapping[str, Any]], base_model: str, metric: str = "auc"
) -> dict[str, tuple[float, float]]:
    """Row label → (mean, std over seeds) of each seed's RelaImpr (%) against the base row's mean
    ``metric``; rows without a base row (or the base row itself) are left out."""
    groups = group_records(records)
    rows = [summary_row(g) for g in groups]
    labels = row_labels(rows)
    out: dict[str, tuple[float, float]] = {}
    for label, row, members in zip(labels, rows, groups, strict=True):
        base = _base_row(row, rows, base_model)
        if base is None or base is row:
            continue
        base_value = getattr(base, f"{metric}_mean")
        values = [
            rela_impr(float(r.get(f"test_{metric}", math.nan)), base_value)
            for r in members
            if r.get("status") == "ok"
        ]
        values = [v for v in values if math.isfinite(v)]
        if values:
            std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
            out[label] = (float(np.mean(values)), std)
    return out


def plot_relaimpr(
    records: Sequence[Mapping[str, Any]], path: str | os.PathLike[str], base_model: str = "base"
) -> Path | None:
    """Write the bar chart (AUC and GAUC RelaImpr side by side); None when no row has a base row."""
    auc, gauc = relaimpr_series(records, base_model, "auc"), relaimpr_series(records, base_model, "gauc")
    if not auc:
        return None
    plt = pyplot()

    labels = list(auc)
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(labels) + 2), 3.8))
    for shift, (name, series) in zip((-0.2, 0.2), (("AUC", auc), ("GAUC", gauc)), strict=True):
        means = [series.get(lab, (math.nan, 0.0))[0] for lab in labels]
        stds = [series.get(lab, (math.nan, 0.0))[1] for lab in labels]
        ax.bar(x + shift, means, 0.4, yerr=stds, capsize=3, label=f"RelaImpr ({name})")
    ax.axhline(0.0, color="black", lw=0.8)
    ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(f"% over {base_model}")
    ax.set_title(f"RelaImpr against {base_model} (mean ± std over seeds)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
