"""Group job records into one row per configuration: mean ± std over seeds and RelaImpr (DIN eq. 11)."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ctrbench.metrics import rela_impr

__all__ = [
    "PLUGIN_KEYS",
    "SummaryRow",
    "group_records",
    "row_labels",
    "strip_row_override",
    "summarize",
    "summary_row",
]

PLUGIN_KEYS = ("model", "dataset", "reg", "act")
# seed, and the trial identity an Optuna sweep passes to each job (ctrbench.sweeper)
_NOT_VARIANT = {*PLUGIN_KEYS, "seed", "optuna.storage", "optuna.study", "optuna.trial"}


@dataclass
class SummaryRow:
    """One configuration, aggregated over its seeds (metrics are the val-selected test metrics)."""

    model: str
    dataset: str
    reg: str
    act: str
    variant: str
    n_seeds: int
    n_failed: int
    auc_mean: float
    auc_std: float
    gauc_mean: float
    gauc_std: float
    logloss_mean: float
    logloss_std: float
    relaimpr: float
    relaimpr_gauc: float
    status: str
    error: str | None = None


def _override_key(override: str) -> str:
    """The config key an override sets: ``+seed=1`` → ``seed``, ``~trainer.x`` → ``trainer.x``."""
    return override.split("=", 1)[0].lstrip("+~")


def strip_row_override(variant: str) -> str:
    """``variant`` without a ``row=<preset>/<row>`` override (a preset's row: model, act, reg, options)."""
    return " ".join(t for t in variant.split() if _override_key(t) != "row")


def _variant(overrides: Sequence[str]) -> list[str]:
    return [o for o in overrides if _override_key(o) not in _NOT_VARIANT]


def _group_key(record: Mapping[str, Any]) -> tuple[Any, ...]:
    """Same plugins and same overrides apart from ``seed=`` ⇒ same configuration."""
    plugins = tuple(str(record.get(k) or "") for k in PLUGIN_KEYS)
    overrides = record.get("overrides")
    if not isinstance(overrides, list):
        return plugins
    return (*plugins, tuple(sorted(_variant([str(o) for o in overrides]))))


def _natural(text: str) -> list[Any]:
    """Sort key where digit runs compare as numbers (job dir ``10`` after ``9``)."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", text)]


def _order(record: Mapping[str, Any]) -> tuple[Any, ...]:
    num = record.get("job_num")
    has_num = isinstance(num, int) and not isinstance(num, bool)
    return (not has_num, num if has_num else 0, _natural(str(record.get("job_dir", ""))))


def _metric(record: Mapping[str, Any], name: str) -> float:
    value = record.get(f"test_{name}")
    try:
        return math.nan if value is None else float(value)
    except (TypeError, ValueError):
        return math.nan


def _mean_std(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample std (ddof=1) of the finite values; std 0.0 for one value, NaN for none."""
    xs = np.array([v for v in values if math.isfinite(v)], dtype=np.float64)
    if xs.size == 0:
        return math.nan, math.nan
    return float(xs.mean()), (float(xs.std(ddof=1)) if xs.size > 1 else 0.0)


def summary_row(records: list[Mapping[str, Any]]) -> SummaryRow:
    first = records[0]
    ok = [r for r in records if r.get("status") == "ok"]
    failed = [r for r in records if r.get("status") != "ok"]
    overrides = first.get("overrides")
    variant = " ".join(_variant([str(o) for o in overrides])) if isinstance(overrides, list) else ""
    stats = {m: _mean_std(_metric(r, m) for r in ok) for m in ("auc", "gauc", "logloss")}
    if not failed:
        status = "ok"
    elif not ok:
        status = "pruned" if all(r.get("status") == "pruned" for r in failed) else "failed"
    else:
        status = f"partial {len(failed)}/{len(records)} failed"
    errors = [str(r["error"]) for r in failed if r.get("error")]
    return SummaryRow(
        **{k: str(first.get(k) or "") for k in PLUGIN_KEYS},
        variant=variant,
        n_seeds=len(ok),
        n_failed=len(failed),
        auc_mean=stats["auc"][0],
        auc_std=stats["auc"][1],
        gauc_mean=stats["gauc"][0],
        gauc_std=stats["gauc"][1],
        logloss_mean=stats["logloss"][0],
        logloss_std=stats["logloss"][1],
        relaimpr=math.nan,
        relaimpr_gauc=math.nan,
        status=status,
        error=(errors[0] if errors else "unknown error") if failed and status != "pruned" else None,
    )


def _base_row(row: SummaryRow, rows: Sequence[SummaryRow], base_model: str) -> SummaryRow | None:
    """The row with ``base_model`` and the same dataset/reg/act/variant, else the first on the dataset.

    Without an equal variant, one equal but for a preset's ``row=`` override (which names the row,
    not its data) is the next best.
    """
    bases = [r for r in rows if r.model == base_model and r.dataset == row.dataset]
    for base in bases:
        if (base.reg, base.act, base.variant) == (row.reg, row.act, row.variant):
            return base
    variant = strip_row_override(row.variant)
    for base in bases:
        if (base.reg, base.act, strip_row_override(base.variant)) == (row.reg, row.act, variant):
            return base
    return bases[0] if bases else None


def group_records(records: Iterable[Mapping[str, Any]]) -> list[list[Mapping[str, Any]]]:
    """Records grouped by configuration (overrides without ``seed=``), in command-line order."""
    groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for record in sorted(records, key=_order):
        groups.setdefault(_group_key(record), []).append(record)
    return list(groups.values())


def row_labels(rows: Sequence[SummaryRow]) -> list[str]:
    """Short names for rows: only the columns that differ between them (the model when none does)."""
    varying = [k for k in PLUGIN_KEYS if len({getattr(r, k) for r in rows}) > 1]
    # variant overrides shared by every row (e.g. `trainer.max_epochs=3`) tell the rows nothing apart
    tokens = [r.variant.split() for r in rows]
    shared = set.intersection(*(set(t) for t in tokens)) if tokens else set()
    labels = []
    for row, own in zip(rows, tokens, strict=True):
        parts = [str(getattr(row, k)) for k in varying if getattr(row, k)]
        parts += [t for t in own if t not in shared]
        labels.append(" ".join(parts) or row.model)
    return labels


def summarize(records: Iterable[Mapping[str, Any]], base_model: str = "base") -> list[SummaryRow]:
    """One :class:`SummaryRow` per configuration, in command-line order (``job_num``, then job dir).

    Records are grouped by their overrides without ``seed=``; mean and sample std are taken over
    the ``ok`` records' val-selected ``test_auc``/``test_gauc``/``test_logloss``. RelaImpr (DIN
    eq. 11) compares each row's mean AUC (and GAUC) with its base row's (see :func:`_base_row`).
    """
    rows = [summary_row(members) for members in group_records(records)]
    for row in rows:
        base = _base_row(row, rows, base_model)
        if base is not None:
            row.relaimpr = rela_impr(row.auc_mean, base.auc_mean)
            row.relaimpr_gauc = rela_impr(row.gauc_mean, base.gauc_mean)
    return rows
