"""The papers' tables as data, and a sweep's summary laid out like one of them.

A preset in ``conf/experiment/`` sets ``paper: <table id>`` (a key of :data:`TABLES`); the summary of a
sweep whose records carry that key (``config.paper``) lists its rows in the paper's order, one block per
dataset column of the paper, each row beside the paper's number. The rows that ran come first: the
paper's datasets we ran on, then our data that is none of the paper's (e.g. ``dataset=synthetic``
under a DIEN preset; headed "ran on synthetic"), then rows the paper does not have; the paper's
datasets nothing ran on follow, each row with the paper's number and no result of ours.

Which of our metrics a paper's "AUC" is: DIN reports the user-weighted AUC of its eq. (10) under the
name AUC (§6.3: "for simplicity, we still refer it as AUC"), i.e. our GAUC; DIEN reports the plain AUC.
RelaImpr (DIN eq. 11) is measured against the table's reference row on the same data, as in the papers.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ctrbench.metrics import rela_impr
from ctrbench.results.summary import (
    SummaryRow,
    comparable,
    group_records,
    row_labels,
    strip_row_override,
    summary_row,
)

__all__ = [
    "TABLES",
    "PaperDataset",
    "PaperLayout",
    "PaperRow",
    "PaperTable",
    "PaperTableRow",
    "get_table",
    "layout",
    "paper_key",
    "strip_row_override",
]

NAN = math.nan
_MISSING = object()


@dataclass(frozen=True)
class PaperDataset:
    """A dataset column of a paper's table and the dataset options a run needs to belong to it."""

    label: str
    match: Mapping[str, Any] = field(default_factory=dict)  # dataset.<key>: value; {}: any dataset


@dataclass(frozen=True)
class PaperTableRow:
    """A row of a paper's table: its label, how a summary row is recognised, the paper's numbers.

    A summary row is this row when its jobs ran the preset's ``row=<table id>/<row>``; without such
    an override, when model, act and reg are equal (``None``: any) and so is every ``config`` value
    (dotted keys into the job's resolved config). ``auc`` and ``relaimpr`` (in %, empty where the
    paper gives none) follow the order of the table's datasets.
    """

    label: str
    row: str
    model: str
    act: str | None
    reg: str | None
    auc: tuple[float, ...]
    relaimpr: tuple[float, ...] = ()
    config: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PaperTable:
    id: str
    title: str
    source: str
    metric: str  # which of our metrics the paper's "AUC" is: "gauc" (DIN eq. 10) or "auc"
    reference: str  # the row (PaperTableRow.row) RelaImpr is measured against
    datasets: tuple[PaperDataset, ...]
    rows: tuple[PaperTableRow, ...]

    def row(self, name: str) -> PaperTableRow | None:
        return next((r for r in self.rows if r.row == name), None)


_DIN = "Zhou et al., Deep Interest Network for Click-Through Rate Prediction, KDD 2018"
# An early version of the DIEN paper (../shared/papers/dien-aaai19.md): its Table 2 and Table 4 numbers
# differ from the final AAAI'19 version (which reports other values, with std over runs). The numbers
# here are this version's.
_DIEN = "Zhou et al., Deep Interest Evolution Network for CTR Prediction, AAAI 2019 (early version)"
_GOODS = "With goods_ids feature"
_NO_GOODS = {"reg.tables": ["item"], "reg.min_count": 1_000_000_000}  # every item id → the OOV row
_ALIBABA = (PaperDataset("Alibaba"),)  # not public: whatever data we run stands in for it
_AMAZON_DIEN = (
    PaperDataset("Electronics", {"name": "amazon", "protocol": "dien", "category": "Electronics"}),
    PaperDataset("Books", {"name": "amazon", "protocol": "dien", "category": "Books"}),
)
R = PaperTableRow

# rows DIEN Tables 2 and 4 share (same numbers in both)
_DIEN_BASE = R("BaseModel", "base", "base", None, None, (0.8538, 0.8846))
_DIEN_FULL = R("DIEN", "dien", "dien", None, None, (0.9030, 0.9281))

TABLES: dict[str, PaperTable] = {
    t.id: t
    for t in (
        PaperTable(
            id="din_table3",
            title="DIN Table 3: model comparison on MovieLens and Amazon (Electronics)",
            source=_DIN,
            metric="gauc",
            reference="base",
            datasets=(
                PaperDataset("MovieLens", {"name": "movielens"}),
                PaperDataset(
                    "Amazon(Electro)", {"name": "amazon", "protocol": "din", "category": "Electronics"}
                ),
            ),
            rows=(  # "other lines except LR use PReLU as activation function"
                R("LR", "lr", "lr", None, "none", (0.7263, 0.7742), (-1.61, -24.34)),
                R("BaseModel", "base", "base", "prelu", "none", (0.7300, 0.8624), (0.00, 0.00)),
                R("Wide&Deep", "wide_deep", "wide_deep", "prelu", "none", (0.7304, 0.8637), (0.17, 0.36)),
                R("PNN", "pnn", "pnn", "prelu", "none", (0.7321, 0.8679), (0.91, 1.52)),
                R("DeepFM", "deepfm", "deepfm", "prelu", "none", (0.7324, 0.8683), (1.04, 1.63)),
                R("DIN", "din", "din", "prelu", "none", (0.7337, 0.8818), (1.61, 5.35)),
                R("DIN with Dice", "din_dice", "din", "dice", "none", (0.7348, 0.8871), (2.09, 6.82)),
            ),
        ),
        PaperTable(
            id="din_table4",
            title="DIN Table 4: best AUCs of BaseModel with different regularizations (Alibaba)",
            source=_DIN,
            metric="gauc",
            reference="no_goods",  # "all the other lines calculate RelaImpr by comparing with first line"
            datasets=_ALIBABA,
            rows=(
                R(
                    "Without goods_ids feature and Reg.",
                    "no_goods",
                    "base",
                    "prelu",
                    "filter",
                    (0.5940,),
                    (0.00,),
                    config=_NO_GOODS,
                ),
                R(f"{_GOODS} without Reg.", "none", "base", "prelu", "none", (0.5959,), (2.02,)),
                R(f"{_GOODS} and Dropout Reg.", "dropout", "base", "prelu", "dropout", (0.5970,), (3.19,)),
                R(f"{_GOODS} and Filter Reg.", "filter", "base", "prelu", "filter", (0.5983,), (4.57,)),
                R(f"{_GOODS} and Difacto Reg.", "difacto", "base", "prelu", "difacto", (0.5954,), (1.49,)),
                R(f"{_GOODS} and MBA. Reg.", "mba", "base", "prelu", "mba", (0.6031,), (9.68,)),
            ),
        ),
        PaperTable(
            id="din_table5",
            title="DIN Table 5: model comparison on Alibaba with full feature sets",
            source=_DIN,
            metric="gauc",
            reference="base",
            datasets=_ALIBABA,
            # footnotes: (a) trained with PReLU, (b) trained with dropout regularization; LR has neither
            rows=(
                R("LR", "lr", "lr", None, None, (0.5738,), (-23.92,)),
                R("BaseModel", "base", "base", "prelu", "dropout", (0.5970,), (0.00,)),
                R("Wide&Deep", "wide_deep", "wide_deep", "prelu", "dropout", (0.5977,), (0.72,)),
                R("PNN", "pnn", "pnn", "prelu", "dropout", (0.5983,), (1.34,)),
                R("DeepFM", "deepfm", "deepfm", "prelu", "dropout", (0.5993,), (2.37,)),
                R("DIN Model", "din", "din", "prelu", "dropout", (0.6029,), (6.08,)),
                R("DIN with MBA Reg.", "din_mba", "din", "prelu", "mba", (0.6060,), (9.28,)),
                R("DIN with Dice", "din_dice", "din", "dice", "dropout", (0.6044,), (7.63,)),
                R("DIN with MBA Reg. and Dice", "din_mba_dice", "din", "dice", "mba", (0.6083,), (11.65,)),
            ),
        ),
        PaperTable(
            id="dien_table2",
            title="DIEN Table 2: results (AUC) on public datasets",
            source=_DIEN,
            metric="auc",
            reference="base",
            datasets=_AMAZON_DIEN,
            rows=(
                _DIEN_BASE,
                R("Wide&Deep", "wide_deep", "wide_deep", None, None, (0.8546, 0.8656)),
                R("PNN", "pnn", "pnn", None, None, (0.8582, 0.8935)),
                R("DIN", "din", "din", None, None, (0.8608, 0.8974)),
                R("Two layer GRU Attention", "gru_attention", "gru_attention", None, None, (0.8640, 0.8993)),
                _DIEN_FULL,
            ),
        ),
        PaperTable(
            id="dien_table4",
            title="DIEN Table 4: effect of AUGRU and auxiliary loss",
            source=_DIEN,
            metric="auc",
            reference="base",
            datasets=_AMAZON_DIEN,
            rows=(
                _DIEN_BASE,
                R("Two layer GRU attention", "gru_attention", "gru_attention", None, None, (0.8640, 0.8993)),
                R("BaseModel + GRU + AIGRU", "aigru", "aigru", None, None, (0.8663, 0.8994)),
                R("BaseModel + GRU + AGRU", "agru", "agru", None, None, (0.8666, 0.8993)),
                R("BaseModel + GRU + AUGRU", "augru", "augru", None, None, (0.8675, 0.9021)),
                _DIEN_FULL,
            ),
        ),
    )
}


def get_table(table_id: str) -> PaperTable:
    """The table with this id; ``KeyError`` naming the known ids otherwise."""
    try:
        return TABLES[table_id]
    except KeyError:
        raise KeyError(f"unknown paper table {table_id!r} (known: {', '.join(TABLES)})") from None


def paper_key(records: Sequence[Mapping[str, Any]]) -> str | None:
    """The ``paper`` key of the records' configs (the first record that has one), else None."""
    for record in records:
        config = record.get("config")
        value = config.get("paper") if isinstance(config, Mapping) else None
        if isinstance(value, str) and value:
            return value
    return None


def reference_label(table: PaperTable | str, records: Sequence[Mapping[str, Any]]) -> str | None:
    """The summary label (:func:`~ctrbench.results.summary.row_labels`) of the configuration that
    stands for the table's reference row — DIN Table 4 compares every line with its first, "without
    goods_ids" — when the records ran on one data, of one code, and exactly one configuration is that
    row; else None (the paired tests then keep their default reference)."""
    table = get_table(table) if isinstance(table, str) else table
    groups = group_records(records)
    rows = [summary_row(members) for members in groups]
    if len({repr(sorted(_dataset_options(m[0], r).items())) for m, r in zip(groups, rows, strict=True)}) != 1:
        return None
    refs = [
        i
        for i, (members, row) in enumerate(zip(groups, rows, strict=True))
        if (spec := _table_row(table, row, members[0])) is not None and spec.row == table.reference
    ]
    if len(refs) != 1 or not all(comparable(r.provenance, rows[refs[0]].provenance) for r in rows):
        return None
    return row_labels(rows)[refs[0]]


def _row_override(overrides: Any) -> str | None:
    """``din_table3/din_dice`` from a job's ``row=din_table3/din_dice`` override, else None."""
    if isinstance(overrides, list):
        for override in map(str, overrides):
            key, _, value = override.partition("=")
            if key.lstrip("+~") == "row" and value:
                return value
    return None


def _select(config: Any, dotted: str) -> Any:
    node = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _matches(spec: PaperTableRow, row: SummaryRow, record: Mapping[str, Any]) -> bool:
    if spec.model != row.model or spec.act not in (None, row.act) or spec.reg not in (None, row.reg):
        return False
    return all(_select(record.get("config"), key) == value for key, value in spec.config.items())


def _table_row(table: PaperTable, row: SummaryRow, record: Mapping[str, Any]) -> PaperTableRow | None:
    """The paper row a summary row stands for: by its ``row=<table>/<name>`` override, else by plugins."""
    chosen = _row_override(record.get("overrides"))
    if chosen is not None:
        prefix, _, name = chosen.rpartition("/")
        if prefix == table.id and table.row(name) is not None:
            return table.row(name)
    return next((spec for spec in table.rows if _matches(spec, row, record)), None)


def _dataset_options(record: Mapping[str, Any], row: SummaryRow) -> dict[str, Any]:
    config = record.get("config")
    dataset = config.get("dataset") if isinstance(config, Mapping) else None
    return dict(dataset) if isinstance(dataset, Mapping) else {"name": row.dataset}


def _column(table: PaperTable, options: Mapping[str, Any]) -> int | None:
    """Index of the paper's dataset column our data (its dataset options) belongs to, else None."""
    for i, column in enumerate(table.datasets):
        if all(options.get(k, _MISSING) == v for k, v in column.match.items()):
            return i
    return None


@dataclass
class PaperRow:
    """One line of the paper layout: our summary row (a placeholder when not run), the paper's numbers."""

    summary: SummaryRow
    label: str = ""  # the paper's row label; "" for a row the paper does not have
    dataset: str = ""  # the paper's dataset column; "" when our data is none of the paper's
    data: str = ""  # our data's name when it is none of the paper's
    paper_auc: float = NAN
    paper_relaimpr: float = NAN
    run: bool = True

    @property
    def where(self) -> str:
        """The data the line is shown under: the paper's dataset, ``ran on <our data>``, or ""."""
        return self.dataset or (f"ran on {self.data}" if self.data else "")


@dataclass
class PaperLayout:
    table: PaperTable
    rows: list[PaperRow]

    @property
    def note(self) -> str | None:
        """Where the rows that ran on none of the paper's datasets are (None when there are none)."""
        ours = list(dict.fromkeys(line.data for line in self.rows if line.data))
        if not ours:
            return None
        idle = list(dict.fromkeys(line.dataset for line in self.rows if not line.run and line.dataset))
        text = (
            f"The rows that ran used {', '.join(ours)}, none of the paper's datasets: they come first, "
            "without the paper's numbers"
        )
        return text + (f"; the paper's rows on {', '.join(idle)} follow, not run." if idle else ".")

    @property
    def caption(self) -> str:
        ours = "GAUC (DIN eq. 10, which DIN calls AUC)" if self.table.metric == "gauc" else "AUC"
        reference = self.table.row(self.table.reference)
        return (
            f"{self.table.title}. Paper: {self.table.source}. The paper's AUC compares with our {ours}; "
            f"RelaImpr against {reference.label if reference else self.table.reference} on the same data."
        )


def _placeholder(spec: PaperTableRow) -> SummaryRow:
    return SummaryRow(
        model=spec.model,
        dataset="",
        reg=spec.reg or "",
        act=spec.act or "",
        variant="",
        n_seeds=0,
        n_failed=0,
        auc_mean=NAN,
        auc_std=NAN,
        gauc_mean=NAN,
        gauc_std=NAN,
        logloss_mean=NAN,
        logloss_std=NAN,
        relaimpr=NAN,
        relaimpr_gauc=NAN,
        status="not run",
    )


def layout(
    table: PaperTable | str, records: Sequence[Mapping[str, Any]], rows: Sequence[SummaryRow]
) -> PaperLayout:
    """``rows`` (:func:`~ctrbench.results.summary.summarize` of ``records``) in the paper's order.

    One block per dataset column of the paper (per distinct data of ours that belongs to it), rows in
    the paper's order; a paper row that was not run is a placeholder with status ``not run``. Runs on
    data that is none of the paper's columns follow, also in the paper's row order, without paper
    numbers; rows the paper does not have come last, in summary order. RelaImpr (AUC and GAUC) is
    recomputed against the table's reference row on the same data (and of a comparable fingerprint:
    the same data and code), where that row was run.
    """
    table = get_table(table) if isinstance(table, str) else table
    groups = group_records(records)
    if len(groups) != len(rows):
        raise ValueError(f"{len(rows)} summary rows for {len(groups)} configurations")
    # our data (by dataset options), in order of appearance → (paper column, [(our row, paper row)])
    data: dict[str, tuple[int | None, list[tuple[SummaryRow, PaperTableRow | None]]]] = {}
    for members, row in zip(groups, rows, strict=True):
        options = _dataset_options(members[0], row)
        entry = data.setdefault(repr(sorted(options.items())), (_column(table, options), []))
        entry[1].append((dataclasses.replace(row), _table_row(table, row, members[0])))

    for _, matched in data.values():
        refs = [r for r, spec in matched if spec is not None and spec.row == table.reference]
        for r, _ in matched if refs else ():
            # the reference run of the same data and code (rows of other fingerprints get none)
            ref = next((x for x in refs if comparable(x.provenance, r.provenance)), None)
            r.relaimpr = rela_impr(r.auc_mean, ref.auc_mean) if ref is not None else NAN
            r.relaimpr_gauc = rela_impr(r.gauc_mean, ref.gauc_mean) if ref is not None else NAN

    ran: list[PaperRow] = []  # the paper's datasets we ran on
    idle: list[PaperRow] = []  # the paper's datasets nothing ran on: after every row that ran
    for i, column in enumerate(table.datasets):
        for matched in [m for c, m in data.values() if c == i] or [[]]:
            for spec in table.rows:
                paper = {
                    "label": spec.label,
                    "dataset": column.label,
                    "paper_auc": spec.auc[i] if i < len(spec.auc) else NAN,
                    "paper_relaimpr": spec.relaimpr[i] if i < len(spec.relaimpr) else NAN,
                }
                runs = [r for r, s in matched if s is spec]
                (ran if matched else idle).extend(
                    [PaperRow(r, **paper) for r in runs] or [PaperRow(_placeholder(spec), run=False, **paper)]
                )
    others = [  # our data that is none of the paper's, in the paper's row order, under its name
        PaperRow(r, label=spec.label, data=_data_name(r))
        for c, m in data.values()
        if c is None
        for spec in table.rows
        for r, s in m
        if s is spec
    ]
    extras = [PaperRow(r) for _, m in data.values() for r, s in m if s is None]  # rows the paper lacks
    return PaperLayout(table, ran + others + extras + idle)


def _data_name(row: SummaryRow) -> str:
    return row.dataset or "other data"
