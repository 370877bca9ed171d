"""Group job records into one row per configuration: mean ± std over seeds and RelaImpr (DIN eq. 11)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ctrbench.metrics import rela_impr
from ctrbench.results.significance import (
    Predictions,
    align,
    common_seeds,
    delong_test,
    holm,
    load_predictions,
    paired_bootstrap_gauc,
    paired_seeds,
)

__all__ = [
    "PLUGIN_KEYS",
    "SummaryRow",
    "compare",
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
    # Paired comparison with the reference row (see :func:`compare`): ``against`` is its label ("" for no
    # reference; the reference row itself has ``is_reference``). Δ = this row − reference over the seeds
    # both ran (matched by seed value), 95% t interval; p: paired t-test, raw and Holm-adjusted over the
    # rows compared; wins: seeds where this row is better; per-seed tests on the jobs' predictions:
    # DeLong (AUC) and a paired bootstrap over users (GAUC), counted at p < 0.05.
    against: str = ""
    is_reference: bool = False
    n_paired: int = 0
    d_auc: float = math.nan
    d_auc_low: float = math.nan
    d_auc_high: float = math.nan
    p_auc: float = math.nan
    p_auc_holm: float = math.nan
    wins_auc: int = 0
    d_gauc: float = math.nan
    d_gauc_low: float = math.nan
    d_gauc_high: float = math.nan
    p_gauc: float = math.nan
    p_gauc_holm: float = math.nan
    wins_gauc: int = 0
    delong_tested: int = 0
    delong_sig: int = 0
    delong_sig_worse: int = 0  # of delong_sig: seeds where the row is significantly *below* the reference
    boot_tested: int = 0
    boot_sig: int = 0
    boot_sig_worse: int = 0
    # why this row is not paired with its reference, or why per-seed tests were not run on every seed
    pair_note: str = ""
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


def summarize(
    records: Iterable[Mapping[str, Any]],
    base_model: str = "base",
    against: str | None = None,
    n_boot: int = 1000,
) -> list[SummaryRow]:
    """One :class:`SummaryRow` per configuration, in command-line order (``job_num``, then job dir).

    Records are grouped by their overrides without ``seed=`` and by their fingerprint (records of
    other data or code are another row, labelled in ``fingerprint``); a configuration run twice counts
    once (:func:`duplicates`). Mean and sample std are taken over the ``ok`` records' val-selected
    ``test_auc``/``test_gauc``/``test_logloss``. RelaImpr (DIN eq. 11) compares each row's mean AUC
    (and GAUC) with its base row's (see :func:`_base_row`). Each row is then paired seed by seed with
    its reference row (:func:`compare`): the base row, or the row or model named by ``against``.
    """
    groups = group_records(records)
    rows = [summary_row(members) for members in groups]
    for row, label in zip(rows, fingerprint_labels(rows), strict=True):
        row.fingerprint = label
    for row in rows:
        base = _base_row(row, rows, base_model)
        if base is not None:
            row.relaimpr = rela_impr(row.auc_mean, base.auc_mean)
            row.relaimpr_gauc = rela_impr(row.gauc_mean, base.gauc_mean)
    compare(rows, groups, base_model, against, n_boot)
    return rows


def _references(rows: Sequence[SummaryRow], base_model: str, against: str | None) -> list[int | None]:
    """Per row, the index of its reference row: the RelaImpr base row (:func:`_base_row`), or with
    ``against`` the row of that label (:func:`row_labels`) or, for a model name, that model's row
    matching this one as :func:`_base_row` does. ``ValueError`` when ``against`` names neither."""
    labels = row_labels(rows)
    index = {id(r): i for i, r in enumerate(rows)}
    if against is not None and against in labels:
        fixed = labels.index(against)
        return [fixed] * len(rows)
    if against is not None and against not in {r.model for r in rows}:
        raise ValueError(
            f"--against {against!r}: no row or model of that name; rows: {', '.join(labels)}; "
            f"models: {', '.join(dict.fromkeys(r.model for r in rows))}"
        )
    model = base_model if against is None else against
    refs = []
    for row in rows:
        base = _base_row(row, rows, model)
        refs.append(None if base is None else index[id(base)])
    return refs


def _load(record: Mapping[str, Any], cache: dict[str, Predictions | str | None]) -> Predictions | str | None:
    """A record's test predictions (the ``predictions`` file its ``result.json`` names, in its job
    folder), None when it names none, or why it cannot be read; loaded once per job."""
    job = str(record.get("job_dir"))
    if job not in cache:
        name = record.get("predictions")
        if not isinstance(name, str) or not name:
            cache[job] = None
        elif Path(name).is_absolute() or ".." in Path(name).parts:
            cache[job] = f"{job}: predictions {name!r} lies outside the job folder"
        elif not (Path(job) / name).is_file():
            cache[job] = None
        else:
            try:
                cache[job] = load_predictions(Path(job) / name)
            except ValueError as exc:
                cache[job] = str(exc)
    return cache[job]


def compare(
    rows: Sequence[SummaryRow],
    groups: Sequence[Sequence[Mapping[str, Any]]],
    base_model: str = "base",
    against: str | None = None,
    n_boot: int = 1000,
) -> None:
    """Fill each row's paired comparison with its reference row (fields ``against`` … ``pair_note``).

    Seeds are matched by value (:func:`~ctrbench.results.significance.paired_seeds`): per-seed
    differences of ``test_auc``/``test_gauc``, their 95% t interval, the paired t-test, Holm-adjusted
    over the rows compared (AUC and GAUC each one family). For each common seed whose two jobs both
    kept ``predictions.npz`` with the same test rows, DeLong's test (AUC) and a paired bootstrap over
    users with ``n_boot`` resamples (GAUC) run on the predictions aligned by row index.
    """
    if n_boot < 1:
        raise ValueError(f"--bootstrap {n_boot}: the number of bootstrap resamples must be at least 1")
    refs = _references(rows, base_model, against)
    labels = row_labels(rows)
    cache: dict[str, Predictions | str | None] = {}
    compared: list[int] = []
    for i, (row, ref) in enumerate(zip(rows, refs, strict=True)):
        if ref is None:
            continue
        if ref == i:
            row.is_reference = True
            continue
        row.against = labels[ref]
        mine, theirs = groups[i], groups[ref]
        loaded: dict[str, Predictions | None] = {}
        unreadable = []
        for record in (*mine, *theirs):
            value = _load(record, cache)
            loaded[str(record.get("job_dir"))] = value if isinstance(value, Predictions) else None
            if isinstance(value, str):
                unreadable.append(value)
        by_auc = paired_seeds(mine, theirs, "auc", loaded)
        by_gauc = paired_seeds(mine, theirs, "gauc", loaded)
        if by_auc.reason is not None:
            row.pair_note = f"cannot pair: {by_auc.reason}"
            continue
        compared.append(i)
        row.n_paired = by_auc.n
        row.d_auc, row.d_auc_low, row.d_auc_high = by_auc.mean, by_auc.ci_low, by_auc.ci_high
        row.p_auc, row.wins_auc = by_auc.p, by_auc.wins
        if by_gauc.reason is None:
            row.d_gauc, row.d_gauc_low, row.d_gauc_high = by_gauc.mean, by_gauc.ci_low, by_gauc.ci_high
            row.p_gauc, row.wins_gauc = by_gauc.p, by_gauc.wins
        pairs, _ = common_seeds(mine, theirs)
        for _seed, a, b in pairs:
            pa, pb = loaded.get(str(a.get("job_dir"))), loaded.get(str(b.get("job_dir")))
            if pa is None or pb is None or align(pa, pb) is not None:
                continue
            delong = delong_test(pa.label, pa.prob, pb.prob)
            boot = paired_bootstrap_gauc(pa.label, pa.prob, pb.prob, pa.group, n_boot=n_boot, seed=0)
            p_delong, p_boot = delong[5], boot[3]
            if math.isfinite(p_delong):
                row.delong_tested += 1
                row.delong_sig += p_delong < 0.05
                row.delong_sig_worse += p_delong < 0.05 and delong[2] < 0
            if math.isfinite(p_boot):
                row.boot_tested += 1
                row.boot_sig += p_boot < 0.05
                row.boot_sig_worse += p_boot < 0.05 and boot[0] < 0
        if row.delong_tested < len(pairs):
            missing = len(pairs) - row.delong_tested
            why = unreadable[0] if unreadable else "predictions.npz missing"
            row.pair_note = f"per-seed tests on {row.delong_tested}/{len(pairs)} seeds ({missing}: {why})"
    for metric in ("auc", "gauc"):
        adjusted = holm([getattr(rows[i], f"p_{metric}") for i in compared])
        for i, value in zip(compared, adjusted, strict=True):
            setattr(rows[i], f"p_{metric}_holm", value)
