"""``dataset=events``: your own impression log as CTR data for DIN/DIEN.

One table (CSV, or Parquet when ``pyarrow`` is installed), one row per impression; the config maps
its columns: ``user``, ``item``, ``label`` (clicked: 0 or 1, or true/false, yes/no, t/f, y/n),
``timestamp`` (epoch numbers, or ISO date-times — one kind per column), optionally ``category`` (an
attribute of the item: the first value seen per item is used) and ``extra`` categorical columns
(context: device, slot, hour...). Values the protocol cannot use — a label other than 0/1, a NaN or
infinite time, a date-time among epoch numbers — are refused with the file, line and column.
Each row's history is the same user's *earlier positive* events (strictly earlier timestamps,
time order, the last ``max_len``), as in the papers' behaviour sequences; rows with fewer than
``min_history`` earlier positives are dropped and counted (``min_history=0`` keeps them).

Splits: ``split=time`` — the last ``test_frac`` of the events in time order are test, the
``val_frac`` before them validation (histories may reach back into training time, as in
production); ``split=user`` — users are partitioned (``test_frac`` to test, ``val_frac`` of the
rest to validation). ``user_feature=true`` adds the user id as a feature (``uid``; users without
training rows map to 0). ``aux_negatives`` adds DIEN's auxiliary-loss negatives (∝ popularity
among clicked items, re-drawn each epoch). The GAUC group is the user.

Example — a log ``clicks.csv`` with columns ``uid,ad_id,ad_cat,clicked,ts,slot``::

    ctrbench -m dataset=events model=base,din,dien seed=1,2,3 \\
        dataset.root=/data/logs dataset.file=clicks.csv \\
        dataset.user=uid dataset.item=ad_id dataset.category=ad_cat \\
        dataset.label=clicked dataset.timestamp=ts \\
        'dataset.extra=[slot]' dataset.split=time dataset.max_len=50

    # or from Python
    from ctrbench.datasets.events import EventsDataset
    cfg = EventsDataset.Config(root="/data/logs/clicks.csv", user="uid", item="ad_id", category="ad_cat",
                               label="clicked", timestamp="ts", extra=["slot"])
    data = EventsDataset(cfg).load()   # DatasetSplits: schema, train/val/test, statistics in data.info
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ctrbench.datasets.cache import ArrayCache, CachedData, protocol_options
from ctrbench.datasets.rawfiles import DatasetError, malformed
from ctrbench.datasets.sequences import (
    TEST,
    TRAIN,
    VAL,
    AuxNegatives,
    behaviour_schema,
    group_by_user,
    history_ends,
    make_split,
    remap,
    sequence_columns,
    split_stats,
    split_users,
    uid_feature,
)
from ctrbench.schema import DatasetSplits, Sequences

SPLIT_MODES = ("time", "user")
FORMATS = ("auto", "csv", "parquet")
RESERVED = ("user", "uid", "item", "cat", "label", "hist_item", "hist_cat", "neg_hist_item", "neg_hist_cat")
FORMAT_VERSION = 1
LABELS = "0 or 1, true/false, yes/no, t/f, y/n"
TIMES = "all epoch numbers, or all ISO date-times such as 2024-05-01T12:30:00"
_TRUE = {"true": 1.0, "yes": 1.0, "t": 1.0, "y": 1.0, "false": 0.0, "no": 0.0, "f": 0.0, "n": 0.0}


@dataclass
class EventsConfig:
    root: str = ""  # the table file, or the folder holding `file`
    file: str = "events.csv"  # file name inside root when root is a folder
    format: str = "auto"  # auto (by extension) | csv | parquet
    sep: str = ","  # CSV delimiter
    user: str = "user"  # column names ...
    item: str = "item"
    category: str = ""  # "" = no category column
    label: str = "label"
    timestamp: str = "timestamp"
    extra: list[str] = field(default_factory=list)  # extra categorical columns (features)
    split: str = "time"  # time | user
    test_frac: float = 0.1
    val_frac: float = 0.1
    max_len: int = 50  # most recent earlier positives per row
    min_history: int = 1  # rows with fewer earlier positives are dropped (counted)
    user_feature: bool = False  # the user id as a feature (uid)
    aux_negatives: bool = True  # neg_hist_* for DIEN's auxiliary loss
    seed: int = 0
    cache_dir: str = ""  # "" = $CTRBENCH_CACHE or ~/.cache/ctrbench


@dataclass
class Table:
    """Raw column values (strings from CSV, typed from Parquet) and how to name a bad row."""

    path: Path
    columns: dict[str, np.ndarray]
    first_line: int  # line number of row 0 (CSV: 2, after the header); 0 = report row numbers

    def where(self, row: int) -> str:
        return f"{self.path}:{row + self.first_line}" if self.first_line else f"{self.path}, row {row}"


def read_csv(path: Path, columns: list[str], sep: str) -> Table:
    """Stream the CSV, keeping only ``columns`` (as strings)."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter=sep)
        header = next(reader, None)
        if not header:
            raise DatasetError(f"{path} is empty (expected a header line naming the columns)")
        _check_columns(path, header, columns)
        index = [header.index(c) for c in columns]
        values: list[list[str]] = [[] for _ in columns]
        line_of_row: list[int] = []
        for row in reader:
            if not row:
                continue
            if len(row) != len(header):
                raise malformed(
                    path, reader.line_num, f"{len(row)} fields, the header has {len(header)}", sep.join(row)
                )
            for out, i in zip(values, index, strict=True):
                out.append(row[i])
            line_of_row.append(reader.line_num)
    if not line_of_row:
        raise DatasetError(f"{path} has a header but no rows")
    contiguous = line_of_row[-1] - line_of_row[0] == len(line_of_row) - 1
    return Table(
        path,
        {c: np.array(v, dtype=object) for c, v in zip(columns, values, strict=True)},
        line_of_row[0] if contiguous else 0,
    )


def read_parquet(path: Path, columns: list[str]) -> Table:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise DatasetError(
            f"reading {path.name} needs pyarrow (pip install pyarrow), or convert it to CSV"
        ) from exc
    try:
        schema = pq.read_schema(path)
        _check_columns(path, schema.names, columns)
        table = pq.read_table(path, columns=columns)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path} is not a readable Parquet file ({exc})") from exc
    if table.num_rows == 0:
        raise DatasetError(f"{path} has no rows")
    out = {}
    for c in columns:
        col = table.column(c)
        if col.null_count:
            first = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
            raise DatasetError(f"{path}, row {first}: column {c!r} is empty ({col.null_count} empty values)")
        out[c] = col.to_numpy()
    return Table(path, out, 0)


def _check_columns(path: Path, present: list[str], wanted: list[str]) -> None:
    missing = [c for c in wanted if c not in present]
    if missing:
        raise DatasetError(
            f"{path} has no column {', '.join(map(repr, missing))} (columns: {', '.join(present)}); "
            "map yours with dataset.user/item/category/label/timestamp/extra"
        )


def _numbers(table: Table, column: str, allowed: str, words: dict[str, float] | None = None) -> np.ndarray:
    """A column as float64; strings are parsed (and ``words`` such as true/false mapped)."""
    values = table.columns[column]
    if values.dtype.kind in "biuf":
        return values.astype(np.float64)
    out = np.empty(len(values))
    for i, v in enumerate(values):
        text = str(v).strip()
        try:
            out[i] = words[text.lower()] if words and text.lower() in words else float(text)
        except ValueError:
            raise DatasetError(
                f"{table.where(i)}: column {column!r} has {text!r}, not a number (allowed: {allowed})"
            ) from None
    return out


def _shown(table: Table, column: str, row: int) -> str:
    return repr(str(table.columns[column][row]).strip())


def _labels(table: Table, column: str) -> np.ndarray:
    """The click label as 0/1: the numbers 0 and 1 or the words of ``_TRUE``; anything else (2, -1,
    NaN) is refused rather than silently read as a click or a non-click."""
    values = _numbers(table, column, LABELS, _TRUE)
    bad = np.flatnonzero((values != 0) & (values != 1))  # NaN compares unequal to both
    if len(bad):
        i = int(bad[0])
        raise DatasetError(
            f"{table.where(i)}: column {column!r} has {_shown(table, column, i)}, not a click label "
            f"(allowed: {LABELS}; {len(bad)} such rows)"
        )
    return values.astype(np.float32)


def _finite(table: Table, column: str, times: np.ndarray) -> np.ndarray:
    bad = np.flatnonzero(~np.isfinite(times))
    if len(bad):
        i = int(bad[0])
        raise DatasetError(
            f"{table.where(i)}: column {column!r} has {_shown(table, column, i)}, not a finite time "
            f"(allowed: {TIMES}; {len(bad)} such rows)"
        )
    return times


def _times(table: Table, column: str) -> np.ndarray:
    """Timestamps: numbers as they are, date-times (ISO strings or Parquet timestamps) as int64 ns.

    A column holds one kind: an ISO date-time among epoch numbers (which numpy would otherwise read
    as years, scrambling the time order) or a number among date-times is refused at the first row
    whose kind differs from the first row's, as are NaN, infinite and NaT values.
    """
    values = table.columns[column]
    if values.dtype.kind == "M":
        return values.astype("datetime64[ns]").astype(np.int64)
    if values.dtype.kind != "O":
        return _finite(table, column, _numbers(table, column, TIMES))
    try:
        numbers = values.astype(np.float64)
    except ValueError:  # not all numbers: date-times, a mix, or text that is neither
        numbers = None
    if numbers is not None:
        return _finite(table, column, numbers)
    texts = [str(v).strip() for v in values]
    kinds = ("a number", "a date-time")
    first = -1
    for i, text in enumerate(texts):
        try:
            float(text)
            kind = 0
        except ValueError:
            try:
                kind = 1 if not np.isnat(np.datetime64(text)) else -1
            except ValueError:
                kind = -1
        if kind < 0:
            raise DatasetError(
                f"{table.where(i)}: column {column!r} has {text!r}, neither a number nor an ISO "
                f"date-time (allowed: {TIMES})"
            )
        if first < 0:
            first = kind
        elif kind != first:
            raise DatasetError(
                f"{table.where(i)}: column {column!r} has {text!r}, {kinds[kind]}, but its first value "
                f"{texts[0]!r} ({table.where(0)}) is {kinds[first]}; a timestamp column holds one kind "
                f"(allowed: {TIMES})"
            )
    return np.array(texts, dtype="datetime64[ns]").astype(np.int64)


def _keys(table: Table, column: str, required: bool) -> np.ndarray:
    values = table.columns[column]
    if required and values.dtype.kind == "O":
        empty = np.flatnonzero(np.array([str(v).strip() == "" for v in values]))
        if len(empty):
            raise DatasetError(f"{table.where(int(empty[0]))}: column {column!r} is empty")
    return values.astype(str) if values.dtype.kind == "O" else values


def _validate(c: EventsConfig) -> None:
    def bad(name: str, allowed: str) -> DatasetError:
        return DatasetError(f"dataset.{name}={getattr(c, name)!r} is invalid: must be {allowed}")

    if not c.root:
        raise DatasetError(
            "dataset.root is required: the events table (CSV or Parquet), or the folder holding it"
        )
    if c.split not in SPLIT_MODES:
        raise bad("split", " | ".join(SPLIT_MODES))
    if c.format not in FORMATS:
        raise bad("format", " | ".join(FORMATS))
    if not 0 < c.test_frac < 1:
        raise bad("test_frac", "in (0, 1)")
    if not 0 <= c.val_frac < 1 or c.val_frac + c.test_frac >= 1:
        raise bad("val_frac", f"in [0, {1 - c.test_frac:g}) so that training rows remain")
    if c.max_len < 1:
        raise bad("max_len", "an integer >= 1")
    if c.min_history < 0:
        raise bad("min_history", "an integer >= 0")
    for name in c.extra:
        if name in RESERVED or name.endswith("_len"):
            raise bad("extra", f"columns not named {', '.join(RESERVED)} or *_len (rename {name!r})")
    mapped = [c.user, c.item, c.label, c.timestamp, *([c.category] if c.category else [])]
    if len(set(mapped)) != len(mapped):
        raise DatasetError(f"dataset.user/item/label/timestamp/category name the same column twice: {mapped}")


class EventsDataset:
    """A user's own impression table; see the module docstring."""

    Config = EventsConfig

    def __init__(self, config: EventsConfig) -> None:
        _validate(config)
        self.config = config

    def raw_file(self) -> Path:
        c = self.config
        root = Path(c.root).expanduser()
        path = root / c.file if root.is_dir() else root
        if not path.is_file():
            where = f"{root} holds no {c.file}" if root.is_dir() else f"{root} does not exist"
            present = ", ".join(sorted(p.name for p in root.iterdir())[:12]) if root.is_dir() else ""
            raise DatasetError(
                f"dataset.root: {where}{f' (found: {present})' if present else ''}; set dataset.root to the "
                "table file or dataset.file to its name"
            )
        return path

    def load(self) -> DatasetSplits:
        path = self.raw_file()
        cache = ArrayCache("events", FORMAT_VERSION, self.config.cache_dir)
        cached = cache.load_or_build([path], protocol_options(self.config), lambda: self.build(path))
        data = cached.data
        if self.config.aux_negatives:
            data.resample = AuxNegatives.of(
                data, cached.extras["popularity"], cached.extras.get("item_cat"), self.config.seed
            )
        return data

    def read(self, path: Path) -> Table:
        c = self.config
        columns = [c.user, c.item, c.label, c.timestamp, *([c.category] if c.category else []), *c.extra]
        parquet = c.format == "parquet" or (c.format == "auto" and path.suffix.lower() in (".parquet", ".pq"))
        return read_parquet(path, columns) if parquet else read_csv(path, columns, c.sep)

    def build(self, path: Path) -> CachedData:
        c = self.config
        rng = np.random.default_rng(c.seed)
        table = self.read(path)
        user, _ = remap(_keys(table, c.user, required=True))
        item, item_keys = remap(_keys(table, c.item, required=True))
        label = _labels(table, c.label)
        time = _times(table, c.timestamp)
        n_items = len(item_keys)
        item_cat: np.ndarray | None = None
        n_cats, several = 0, 0
        if c.category:
            cat, cat_keys = remap(_keys(table, c.category, required=False))
            n_cats = len(cat_keys)
            first = np.unique(item, return_index=True)[1]  # first event of every item (ids 1..n)
            item_cat = np.r_[0, cat[first]].astype(np.int64)
            several = int((item_cat[item] != cat).astype(bool).sum())
        extra = {name: remap(_keys(table, name, required=False)) for name in c.extra}

        seqs = group_by_user(user, time)
        o = seqs.order
        s_item, s_label, owner = item[o], label[o], seqs.owner
        offsets, end = history_ends(seqs, time[o], s_label > 0)
        hist_item = s_item[s_label > 0]
        if not len(hist_item):
            raise DatasetError(f"{path.name} has no positive events (column {c.label!r}), so no histories")
        if c.split == "user":
            part = split_users(rng, len(seqs), c.test_frac, c.val_frac)[owner]
        else:
            part = self._time_part(time)[o]
        keep = end >= c.min_history

        columns: dict[str, np.ndarray] = {"user": owner + 1, "item": s_item, "label": s_label}
        if item_cat is not None:
            columns["cat"] = item_cat[s_item]
        for name, (ids, _) in extra.items():
            columns[name] = ids[o]
        uid_vocab = 0
        if c.user_feature:
            columns["uid"] = uid_feature(owner + 1, np.where(keep, part, -1))
            uid_vocab = len(seqs) + 1
        schema = behaviour_schema(
            n_items,
            n_cats,
            c.max_len,
            uid_vocab=uid_vocab,
            extra={name: len(keys) + 1 for name, (_, keys) in extra.items()},
            aux_negatives=c.aux_negatives,
        )
        splits = [make_split(columns, owner, end, keep & (part == p)) for p in (TRAIN, VAL, TEST)]
        for name, split in zip(("train", "test"), (splits[0], splits[2]), strict=True):
            if not len(split):
                raise DatasetError(
                    f"the {name} split of {path.name} is empty ({len(o)} events, {int((~keep).sum())} "
                    f"with fewer than min_history={c.min_history} earlier positives); lower "
                    "dataset.min_history or add data"
                )
        popularity = np.bincount(hist_item, minlength=n_items + 1)
        data = DatasetSplits(
            schema,
            *splits,
            sequences=Sequences(offsets, sequence_columns(hist_item, item_cat, c.aux_negatives)),
        )
        extras = {"popularity": popularity} | ({"item_cat": item_cat} if item_cat is not None else {})
        if c.aux_negatives:
            AuxNegatives.of(data, popularity, item_cat, c.seed)(0)
        data.info = split_stats(
            data,
            events=len(o),
            split=c.split,
            extra_columns={name: len(keys) for name, (_, keys) in extra.items()},
            events_with_another_category_than_their_items_first=several,
            dropped={f"rows_with_fewer_than_{c.min_history}_earlier_positives": int((~keep).sum())},
        )
        return CachedData(data, extras)

    def _time_part(self, time: np.ndarray) -> np.ndarray:
        """Split per event (input order): the latest ``test_frac`` events test, the ``val_frac``
        before them validation (ranked by time, ties by input order)."""
        c = self.config
        n = len(time)
        rank = np.empty(n, dtype=np.int64)
        rank[np.argsort(time, kind="stable")] = np.arange(n)
        n_test = max(1, int(round(n * c.test_frac)))
        n_val = int(round(n * c.val_frac)) if c.val_frac > 0 else 0
        return np.where(rank >= n - n_test, TEST, np.where(rank >= n - n_test - n_val, VAL, TRAIN)).astype(
            np.int8
        )
