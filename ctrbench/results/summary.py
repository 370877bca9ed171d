"""Group job records into one row per configuration: mean ± std over seeds and RelaImpr (DIN eq. 11)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ctrbench.metrics import rela_impr

__all__ = [
    "PLUGIN_KEYS",
    "SummaryRow",
    "comparable",
    "duplicates",
    "fingerprint_key",
    "fingerprint_labels",
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
    # what tells this row's data/code apart from the table's other rows ("" when nothing does): set when
    # the table's records have different fingerprints, so one configuration can be two rows
    fingerprint: str = ""
    # the records' fingerprint (data, code versions), see :func:`fingerprint_key`; None: unknown
    provenance: tuple[Any, ...] | None = field(default=None, repr=False, compare=False)


def _override_key(override: str) -> str:
    """The config key an override sets: ``+seed=1`` → ``seed``, ``~trainer.x`` → ``trainer.x``."""
    return override.split("=", 1)[0].lstrip("+~")


def strip_row_override(variant: str) -> str:
    """``variant`` without a ``row=<preset>/<row>`` override (a preset's row: model, act, reg, options)."""
    return " ".join(t for t in variant.split() if _override_key(t) != "row")


def _variant(overrides: Sequence[str]) -> list[str]:
    return [o for o in overrides if _override_key(o) not in _NOT_VARIANT]


def fingerprint_key(record: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """``(data, ((distribution, version), ...))`` of a record's ``fingerprint``; None when it has none
    (written by an older version: unknown). The device is not part of it."""
    fp = record.get("fingerprint")
    if not isinstance(fp, Mapping):
        return None
    code = fp.get("code")
    versions = tuple(sorted((str(k), str(v)) for k, v in code.items())) if isinstance(code, Mapping) else ()
    return (None if fp.get("data") is None else str(fp.get("data")), versions)


def comparable(a: tuple[Any, ...] | None, b: tuple[Any, ...] | None) -> bool:
    """Whether two fingerprints (:func:`fingerprint_key`) may be compared: the same data and the same
    version of every distribution both name (two unknown ones: yes; unknown and known: no)."""
    if a is None or b is None:
        return a is None and b is None
    if a[0] != b[0]:
        return False
    mine, theirs = dict(a[1]), dict(b[1])
    return all(mine[name] == theirs[name] for name in set(mine) & set(theirs))


def _group_key(record: Mapping[str, Any]) -> tuple[Any, ...]:
    """Same plugins, same overrides apart from ``seed=`` and the same fingerprint ⇒ same configuration."""
    plugins = tuple(str(record.get(k) or "") for k in PLUGIN_KEYS)
    overrides = record.get("overrides")
    if not isinstance(overrides, list):
        return (*plugins, fingerprint_key(record))
    return (*plugins, tuple(sorted(_variant([str(o) for o in overrides]))), fingerprint_key(record))


def _identity(record: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """What makes two records the same job: the same configuration (:func:`_group_key`: plugins,
    overrides but the seed, fingerprint), the same set of overrides and the same resolved config;
    None when the record has neither overrides nor config (nothing to tell it apart by)."""
    config, overrides = record.get("config"), record.get("overrides")
    if not isinstance(config, Mapping) and not isinstance(overrides, list):
        return None
    return (
        _group_key(record),
        tuple(sorted(str(o) for o in overrides)) if isinstance(overrides, list) else None,
        json.dumps(config, sort_keys=True, default=str) if isinstance(config, Mapping) else None,
    )


def duplicates(records: Iterable[Mapping[str, Any]]) -> list[tuple[Mapping[str, Any], Mapping[str, Any]]]:
    """``(dropped, kept)`` for every record that repeats another's identity (:func:`_identity`): the
    same configuration run twice counts once. Kept is an ``ok`` record if there is one, else the first
    in command-line order."""
    first: dict[tuple[Any, ...], Mapping[str, Any]] = {}
    pairs: list[tuple[Mapping[str, Any], Mapping[str, Any]]] = []
    for record in sorted(records, key=lambda r: (r.get("status") != "ok", _order(r))):
        key = _identity(record)
        if key is None:
            continue
        if key in first:
            pairs.append((record, first[key]))
        else:
            first[key] = record
    return pairs


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
    """The row of one configuration's records (one group of :func:`group_records`)."""
    first = records[0]
    ok = [r for r in records if r.get("status") == "ok"]
    failed = [r for r in records if r.get("status") != "ok"]
    overrides = first.get("overrides")
    variant = " ".join(_variant([str(o) for o in overrides])) if isinstance(overrides, list) else ""
    stats = {m: _mean_std(_metric(r, m) for r in ok) for m in ("auc", "gauc", "logloss")}
    # a record still "running" when its command's summary is written was interrupted (killed outright)
    kinds = {"interrupted" if r.get("status") == "running" else str(r.get("status")) for r in failed}
    kind = kinds.pop() if len(kinds) == 1 else "failed"
    if not failed:
        status = "ok"
    elif not ok:
        status = kind
    else:
        status = f"partial {len(failed)}/{len(records)} {kind}"
    errors = [
        str(r["error"]) if r.get("error") else "ended while running (killed, or its process died)"
        for r in failed
        if r.get("error") or r.get("status") == "running"
    ]
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
        provenance=fingerprint_key(first),
    )


def _base_row(row: SummaryRow, rows: Sequence[SummaryRow], base_model: str) -> SummaryRow | None:
    """The row with ``base_model`` and the same dataset/reg/act/variant, else the first on the dataset.

    Without an equal variant, one equal but for a preset's ``row=`` override (which names the row,
    not its data) is the next best. Only a base row of a :func:`comparable` fingerprint (the same data
    and code) counts: rows of other data or code get no RelaImpr.
    """
    bases = [
        r
        for r in rows
        if r.model == base_model and r.dataset == row.dataset and comparable(r.provenance, row.provenance)
    ]
    for base in bases:
        if (base.reg, base.act, base.variant) == (row.reg, row.act, row.variant):
            return base
    variant = strip_row_override(row.variant)
    for base in bases:
        if (base.reg, base.act, strip_row_override(base.variant)) == (row.reg, row.act, variant):
            return base
    return bases[0] if bases else None


def group_records(records: Iterable[Mapping[str, Any]]) -> list[list[Mapping[str, Any]]]:
    """Records grouped by configuration (overrides without ``seed=``) and fingerprint, in command-line
    order; a record repeating another's config and fingerprint (:func:`duplicates`) counts once."""
    records = list(records)
    dropped = {id(r) for r, _ in duplicates(records)}
    groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for record in sorted(records, key=_order):
        if id(record) not in dropped:
            groups.setdefault(_group_key(record), []).append(record)
    return list(groups.values())


def _short(value: str) -> str:
    """A data fingerprint shortened for a table cell (``arrays-0123abcd…`` → ``arrays-0123abcd``)."""
    prefix, _, digest = value.rpartition("-")
    return f"{prefix}-{digest[:8]}" if prefix else value[:8]


def fingerprint_labels(rows: Sequence[SummaryRow]) -> list[str]:
    """Per row, what sets its fingerprint apart from the other rows': ``data <short>`` when the data
    differs, ``<distribution> <version>`` for each distribution whose version differs, ``no fingerprint``
    for records of older versions; all ``""`` when the rows' fingerprints are comparable."""
    keys = [row.provenance for row in rows]
    if all(comparable(a, b) for a in keys for b in keys):
        return [""] * len(rows)
    known = [k for k in keys if k is not None]
    data_varies = len({k[0] for k in known}) > 1
    versions: dict[str, set[str]] = {}
    for key in known:
        for name, version in key[1]:
            versions.setdefault(name, set()).add(version)
    labels = []
    for key in keys:
        if key is None:
            labels.append("no fingerprint")
            continue
        parts = [f"data {_short(str(key[0]))}"] if data_varies else []
        parts += [f"{name} {version}" for name, version in key[1] if len(versions[name]) > 1]
        labels.append(", ".join(parts))
    return labels


def row_labels(rows: Sequence[SummaryRow]) -> list[str]:
    """Short names for rows: only the columns that differ between them (the model when none does), and
    what sets a row's data or code apart (:func:`fingerprint_labels`) in brackets."""
    varying = [k for k in PLUGIN_KEYS if len({getattr(r, k) for r in rows}) > 1]
    # variant overrides shared by every row (e.g. `trainer.max_epochs=3`) tell the rows nothing apart
    tokens = [r.variant.split() for r in rows]
    shared = set.intersection(*(set(t) for t in tokens)) if tokens else set()
    labels = []
    for row, own, fingerprint in zip(rows, tokens, fingerprint_labels(rows), strict=True):
        parts = [str(getattr(row, k)) for k in varying if getattr(row, k)]
        parts += [t for t in own if t not in shared]
        parts += [f"[{fingerprint}]"] if fingerprint else []
        labels.append(" ".join(parts) or row.model)
    return labels


def summarize(records: Iterable[Mapping[str, Any]], base_model: str = "base") -> list[SummaryRow]:
    """One :class:`SummaryRow` per configuration, in command-line order (``job_num``, then job dir).

    Records are grouped by their overrides without ``seed=`` and by their fingerprint (records of
    other data or code are another row, labelled in ``fingerprint``); a configuration run twice counts
    once (:func:`duplicates`). Mean and sample std are taken over the ``ok`` records' val-selected
    ``test_auc``/``test_gauc``/``test_logloss``. RelaImpr (DIN eq. 11) compares each row's mean AUC
    (and GAUC) with its base row's (see :func:`_base_row`).
    """
    rows = [summary_row(members) for members in group_records(records)]
    for row, label in zip(rows, fingerprint_labels(rows), strict=True):
        row.fingerprint = label
    for row in rows:
        base = _base_row(row, rows, base_model)
        if base is not None:
            row.relaimpr = rela_impr(row.auc_mean, base.auc_mean)
            row.relaimpr_gauc = rela_impr(row.gauc_mean, base.gauc_mean)
    return rows
