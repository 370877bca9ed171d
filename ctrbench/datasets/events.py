"""``dataset=events``: your own impression log as CTR data for DIN/DIEN.

One table, one row per impression: a CSV file, a Parquet file, or a folder of Parquet shards (any
depth; ``key=value`` folders such as ``date=2024-01-07/`` are hive partitions whose keys become
columns), read with pyarrow — typed, multi-threaded, only the mapped columns, in record batches
(:mod:`ctrbench.datasets.arrow_tables`). The config maps its columns: ``user``, ``item``, ``label``
(clicked: 0 or 1, or true/false, yes/no, t/f, y/n), ``timestamp`` (epoch numbers, or ISO date-times /
Parquet timestamps — one kind per column), optionally ``category`` (an attribute of the item: the
first value seen per item is used) and ``extra`` categorical columns (context: device, slot, hour...).
``filter`` — ``[[column, op, value], ...]``, all of which must hold — is pushed down to the reader:
shards of excluded partitions are never opened and Parquet row groups whose statistics exclude them
are skipped. Values the protocol cannot use — a label other than 0/1, a NaN or infinite time, a
date-time among epoch numbers — are refused with the file, line (CSV) or row (Parquet: the shard's
own row number) and column. Every step is vectorized: ids are dictionary-encoded (integer ids through
a presence table over their range) into dense ids 1..n in sorted raw-key order; rows are ordered by
(user, time) with one packed sort; history ends come from cumulative sums. The raw id behind every
embedding row is kept in ``DatasetSplits.vocabularies`` (row 0 = "", an integer id 12 → "12", as in
a CSV), so runs on two logs can be matched row by row.

Cache key: a single file's sha256 (memoised by size and mtime); a folder of shards is not read
whole for a key — each shard's path relative to the folder, size, mtime and the sha256 of its Parquet
footer (schema, row groups and their statistics) are hashed instead, so a changed, added, removed or
touched shard changes the key (:func:`~ctrbench.datasets.cache.parquet_footer_digests`).

Each row's history is the same user's *earlier positive* events (strictly earlier timestamps,
time order, the last ``max_len``), as in the papers' behaviour sequences; rows with fewer than
``min_history`` earlier positives are dropped and counted (``min_history=0`` keeps them).

Splits: ``split=time`` — the last ``test_frac`` of the events in time order are test, the
``val_frac`` before them validation; or named boundaries: rows at/after ``test_from`` are test, rows
in [``val_from``, ``test_from``) validation (without ``val_from``: the latest ``val_frac`` of the rows
before ``test_from``), earlier rows training — dates (``2024-01-07``) or date-times for a date-time
column, epoch numbers for a numeric one (histories may reach back into training time, as in
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

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from ctrbench.datasets.arrow_tables import (
    PARQUET_SUFFIXES,
    KeyEncoder,
    TableSource,
    key_strings,
    parquet_shards,
    row_filter,
)
from ctrbench.datasets.cache import ArrayCache, CachedData, parquet_footer_digests, protocol_options
from ctrbench.datasets.rawfiles import DatasetError
from ctrbench.datasets.sequences import (
    TEST,
    TRAIN,
    VAL,
    AuxNegatives,
    behaviour_schema,
    group_by_user,
    history_ends,
    sequence_columns,
    split_stats,
    split_users,
    uid_feature,
)
from ctrbench.schema import DatasetSplits, Sequences, Split

SPLIT_MODES = ("time", "user")
FORMATS = ("auto", "csv", "parquet")
RESERVED = ("user", "uid", "item", "cat", "label", "hist_item", "hist_cat", "neg_hist_item", "neg_hist_cat")
FORMAT_VERSION = 2
LABELS = "0 or 1, true/false, yes/no, t/f, y/n"
TIMES = "all epoch numbers, or all ISO date-times such as 2024-05-01T12:30:00"
BOUNDARY = "a date (2024-01-07), a date-time (2024-01-07T12:00:00) or an epoch number in the column's unit"
_TRUE = {"true": 1.0, "yes": 1.0, "t": 1.0, "y": 1.0, "false": 0.0, "no": 0.0, "f": 0.0, "n": 0.0}
NUMBER, DATETIME = "a number", "a date-time"


@dataclass
class EventsConfig:
    root: str = ""  # the table file, a folder holding `file`, or a folder of Parquet shards
    file: str = "events.csv"  # file name inside root when root is a folder
    format: str = "auto"  # auto (by extension) | csv | parquet
    sep: str = ","  # CSV delimiter
    user: str = "user"  # column names ...
    item: str = "item"
    category: str = ""  # "" = no category column
    label: str = "label"
    timestamp: str = "timestamp"
    extra: list[str] = field(default_factory=list)  # extra categorical columns (features)
    filter: list[Any] = field(default_factory=list)  # [[column, op, value], ...], all must hold
    split: str = "time"  # time | user
    test_frac: float = 0.1
    val_frac: float = 0.1
    val_from: str = ""  # split=time: rows at/after this time (and before test_from) are validation
    test_from: str = ""  # split=time: rows at/after this time are test ("" = the last test_frac)
    max_len: int = 50  # most recent earlier positives per row
    min_history: int = 1  # rows with fewer earlier positives are dropped (counted)
    user_feature: bool = False  # the user id as a feature (uid)
    aux_negatives: bool = True  # neg_hist_* for DIEN's auxiliary loss
    seed: int = 0
    cache_dir: str = ""  # "" = $CTRBENCH_CACHE or ~/.cache/ctrbench


@dataclass
class Events:
    """The mapped columns, typed: dense ids (1..n, sorted raw keys) and their raw keys per id column,
    click labels (float32 0/1) and times (epoch numbers, or int64 ns for date-times)."""

    ids: dict[str, np.ndarray]
    keys: dict[str, pa.Array]
    label: np.ndarray
    time: np.ndarray
    time_kind: str


@dataclass
class _Problem:
    """The first row with a value of one kind of problem, and how many rows have it."""

    file: int
    row: int
    text: str
    count: int = 0


class EventsReader:
    """Streams the table's record batches into :class:`Events`; every check is vectorized per batch
    (distinct strings are parsed once per batch, never row by row)."""

    def __init__(self, source: TableSource, c: EventsConfig, filter: ds.Expression | None) -> None:
        self.source, self.c, self.filter = source, c, filter
        self.first_time: tuple[str, str, int, int] | None = None  # (kind, text, file, row) of row 0
        self.problems: dict[str, _Problem] = {}

    def where(self, file: int, row: int) -> str:
        return self.source.where(file, row, self.filter)

    def read(self) -> Events:
        c = self.c
        ids = [c.user, c.item, *([c.category] if c.category else []), *c.extra]
        encoders = {name: KeyEncoder() for name in ids}
        labels: list[np.ndarray] = []
        times: list[np.ndarray] = []
        kinds: list[str] = []
        for file, row, batch in self.source.batches([*ids, c.label, c.timestamp], self.filter):
            at: Callable[[int], str] = lambda i, f=file, r=row: self.where(f, r + i)  # noqa: E731
            for name in [*ids, c.label, c.timestamp]:
                column = batch.column(name)
                if column.null_count:
                    first = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
                    raise DatasetError(
                        f"{at(first)}: column {name!r} is empty ({column.null_count} empty values)"
                    )
            for name, encoder in encoders.items():
                values = encoder.add(batch.column(name))
                if name in (c.user, c.item):
                    _no_empty_keys(values, name, at)
            labels.append(self._labels(batch.column(c.label), file, row, at))
            time, kind = self._times(batch.column(c.timestamp), file, row, at)
            times.append(time)
            kinds.append(kind)
        if not labels:
            name = self.source.name
            if self.filter is not None:
                raise DatasetError(f"dataset.filter={c.filter!r} keeps none of the rows of {name}")
            raise DatasetError(
                f"{name} has a header but no rows" if not self.source.parquet else f"{name} has no rows"
            )
        self._raise_problems()
        encoded = {name: e.finish() for name, e in encoders.items()}
        return Events(
            ids={k: v[0] for k, v in encoded.items()},
            keys={k: v[1] for k, v in encoded.items()},
            label=np.concatenate(labels),
            time=np.concatenate(times) if len(times) > 1 else times[0],
            time_kind=kinds[0],
        )

    def _count(self, key: str, file: int, row: int, bad: np.ndarray, shown: Callable[[int], str]) -> None:
        if not len(bad):
            return
        problem = self.problems.get(key)
        if problem is None:
            problem = self.problems[key] = _Problem(file, row + int(bad[0]), shown(int(bad[0])))
        problem.count += len(bad)

    def _raise_problems(self) -> None:
        c = self.c
        for key, allowed, what in (
            (c.label, LABELS, "not a click label"),
            (c.timestamp, TIMES, "not a finite time"),
        ):
            p = self.problems.get(key)
            if p is not None:
                raise DatasetError(
                    f"{self.where(p.file, p.row)}: column {key!r} has {p.text!r}, {what} "
                    f"(allowed: {allowed}; {p.count} such rows)"
                )

    def _labels(self, column: pa.Array, file: int, row: int, at: Callable[[int], str]) -> np.ndarray:
        """The click label as 0/1: the numbers 0 and 1 or the words of ``_TRUE``; anything else (2, -1,
        NaN) is refused rather than silently read as a click or a non-click."""
        name = self.c.label
        if pa.types.is_dictionary(column.type) or pa.types.is_string(column.type):
            coded = column if pa.types.is_dictionary(column.type) else pc.dictionary_encode(column)
            words = [str(w).strip() for w in coded.dictionary.to_pylist()]
            parsed = np.array([_label_number(w) for w in words], dtype=np.float64)
            index = coded.indices.to_numpy()
            not_number = np.flatnonzero(np.isinf(parsed))  # distinct values that are no number at all
            if len(not_number):
                first = int(np.flatnonzero(np.isin(index, not_number))[0])
                raise DatasetError(
                    f"{at(first)}: column {name!r} has {words[index[first]]!r}, not a number "
                    f"(allowed: {LABELS})"
                )
            values = parsed[index]

            def shown(i: int) -> str:
                return words[index[i]]
        else:
            values = column.to_numpy(zero_copy_only=False).astype(np.float64)

            def shown(i: int) -> str:
                return str(column[i].as_py()).strip()

        self._count(name, file, row, np.flatnonzero((values != 0) & (values != 1)), shown)
        return values.astype(np.float32)

    def _times(
        self, column: pa.Array, file: int, row: int, at: Callable[[int], str]
    ) -> tuple[np.ndarray, str]:
        """Timestamps: numbers as they are, date-times (ISO strings or Parquet timestamps) as int64 ns.

        A column holds one kind: an ISO date-time among epoch numbers (which would otherwise be read as
        years, scrambling the time order) or a number among date-times is refused at the first row whose
        kind differs from the first row's, as are NaN, infinite and NaT values.
        """
        kind_of = column.type.value_type if pa.types.is_dictionary(column.type) else column.type
        if pa.types.is_dictionary(column.type):
            column = column.cast(kind_of)
        if pa.types.is_timestamp(kind_of) or pa.types.is_date(kind_of):
            values, kind = (
                column.cast(pa.timestamp("ns")).to_numpy(zero_copy_only=False).view(np.int64),
                DATETIME,
            )
        elif pa.types.is_integer(kind_of):
            values, kind = column.to_numpy(zero_copy_only=False).astype(np.int64), NUMBER
        elif pa.types.is_floating(kind_of) or pa.types.is_boolean(kind_of):
            values, kind = column.to_numpy(zero_copy_only=False).astype(np.float64), NUMBER
        elif pa.types.is_string(kind_of) or pa.types.is_large_string(kind_of):
            values, kind = self._parse_times(column, at)
        else:
            raise DatasetError(
                f"{at(0)}: column {self.c.timestamp!r} has type {kind_of}, not a time (allowed: {TIMES})"
            )
        if self.first_time is None:
            self.first_time = (kind, str(column[0].as_py()).strip(), file, row)
        elif kind != self.first_time[0]:
            self._mixed(column, at)
        if values.dtype.kind == "f":
            self._count(
                self.c.timestamp,
                file,
                row,
                np.flatnonzero(~np.isfinite(values)),
                lambda i: str(column[i].as_py()).strip(),
            )
        return values, kind

    def _parse_times(self, column: pa.Array, at: Callable[[int], str]) -> tuple[np.ndarray, str]:
        targets = (pa.int64(), NUMBER), (pa.float64(), NUMBER), (pa.timestamp("ns"), DATETIME)
        for target, kind in (*targets, (pa.timestamp("ns", "UTC"), DATETIME)):  # last: with zone offsets
            try:
                parsed = pc.cast(pc.utf8_trim_whitespace(column), target)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                continue
            values = parsed.to_numpy(zero_copy_only=False)
            return (values.view(np.int64) if kind == DATETIME else values), kind
        # rare formats numpy reads (e.g. a zone suffix), or a mix / text that is neither: row by row
        texts = [str(v).strip() for v in column.to_pylist()]
        kinds = [_time_kind(t) for t in texts]
        first_kind = self.first_time[0] if self.first_time is not None else kinds[0]
        if any(kind is None or kind != first_kind for kind in kinds):
            self._mixed(column, at)  # raises at the first row that is neither, or of the other kind
        if first_kind == NUMBER:
            return np.array(texts, dtype=np.float64), NUMBER
        return np.array(texts, dtype="datetime64[ns]").astype(np.int64), DATETIME

    def _mixed(self, column: pa.Array, at: Callable[[int], str]) -> None:
        """Raise at the batch's first row whose kind differs from the column's first value's."""
        texts = [str(v).strip() for v in column.to_pylist()]
        kinds = [_time_kind(t) for t in texts]
        if self.first_time is None:
            first_kind, first_text, file, row = kinds[0], texts[0], -1, 0
        else:
            first_kind, first_text, file, row = self.first_time
        for i, (text, kind) in enumerate(zip(texts, kinds, strict=True)):
            if kind is None:
                raise DatasetError(
                    f"{at(i)}: column {self.c.timestamp!r} has {text!r}, neither a number nor an ISO "
                    f"date-time (allowed: {TIMES})"
                )
            if kind != first_kind:
                origin = at(0) if file < 0 else self.where(file, row)
                raise DatasetError(
                    f"{at(i)}: column {self.c.timestamp!r} has {text!r}, {kind}, but its first value "
                    f"{first_text!r} ({origin}) is {first_kind}; a timestamp column holds one kind "
                    f"(allowed: {TIMES})"
                )
        raise DatasetError(
            f"{at(0)}: column {self.c.timestamp!r} mixes numbers and date-times (allowed: {TIMES})"
        )


def _label_number(text: str) -> float:
    """A label word or number as a float; ``inf`` marks text that is no number (an infinite label
    written as a number is refused as "not a click label" like any other value but 0 and 1)."""
    low = text.lower()
    if low in _TRUE:
        return _TRUE[low]
    try:
        value = float(text)
    except ValueError:
        return np.inf
    return np.nan if np.isinf(value) else value


def _time_kind(text: str) -> str | None:
    try:
        float(text)
        return NUMBER
    except ValueError:
        pass
    try:
        return DATETIME if not np.isnat(np.datetime64(text)) else None
    except ValueError:
        return None


def _no_empty_keys(values: pa.Array, name: str, at: Callable[[int], str]) -> None:
    """A user or item id that is empty (or only spaces) is refused at its first row."""
    if not pa.types.is_dictionary(values.type):
        return
    dictionary = values.dictionary
    if not (pa.types.is_string(dictionary.type) or pa.types.is_large_string(dictionary.type)):
        return
    empty = np.flatnonzero(pc.equal(pc.utf8_trim_whitespace(dictionary), "").to_numpy(zero_copy_only=False))
    if len(empty):
        first = int(np.flatnonzero(np.isin(values.indices.to_numpy(), empty))[0])
        raise DatasetError(f"{at(first)}: column {name!r} is empty")


def _boundary_kind(text: str) -> str | None:
    """``NUMBER`` or ``DATETIME`` for a split boundary, None when it is neither."""
    return _time_kind(text.strip()) if text.strip() else None


def _validate(c: EventsConfig) -> None:
    def bad(name: str, allowed: str) -> DatasetError:
        return DatasetError(f"dataset.{name}={getattr(c, name)!r} is invalid: must be {allowed}")

    if not c.root:
        raise DatasetError(
            "dataset.root is required: the events table (CSV or Parquet), a folder holding it, or a "
            "folder of Parquet shards"
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
    for name in ("val_from", "test_from"):
        value = getattr(c, name)
        if value and _boundary_kind(value) is None:
            raise bad(name, BOUNDARY)
    if (c.val_from or c.test_from) and c.split != "time":
        raise DatasetError("dataset.val_from/test_from name split=time boundaries; set dataset.split=time")
    if c.val_from and not c.test_from:
        raise DatasetError(
            f"dataset.val_from={c.val_from!r} needs dataset.test_from (rows at/after it are test, "
            "[val_from, test_from) validation)"
        )
    if c.val_from and _boundary_kind(c.val_from) == _boundary_kind(c.test_from):
        kind = _boundary_kind(c.val_from)
        as_number = (lambda t: float(t)) if kind == NUMBER else (lambda t: np.datetime64(t.strip(), "ns"))
        if as_number(c.val_from) > as_number(c.test_from):
            raise DatasetError(
                f"dataset.val_from={c.val_from!r} is after dataset.test_from={c.test_from!r}; validation is "
                "[val_from, test_from)"
            )


def _plain(value: Any) -> Any:
    """Hydra list nodes (and tuples) as plain lists of plain values."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [_plain(v) for v in value]
    return value


class EventsDataset:
    """A user's own impression table; see the module docstring."""

    Config = EventsConfig

    def __init__(self, config: EventsConfig) -> None:
        config.filter = _plain(config.filter or [])
        config.extra = list(config.extra)
        config.val_from, config.test_from = str(config.val_from or ""), str(config.test_from or "")
        _validate(config)
        self.config = config

    def source(self) -> TableSource:
        """The table's files: ``root`` itself, ``root/file``, or the Parquet shards under ``root``."""
        c = self.config
        root = Path(c.root).expanduser()
        path = root / c.file if root.is_dir() else root
        if root.is_dir() and not path.is_file() and c.format != "csv":
            shards = parquet_shards(root)
            if shards:
                return TableSource(shards, True, root=root)
        if not path.is_file():
            where = f"{root} holds no {c.file}" if root.is_dir() else f"{root} does not exist"
            present = ", ".join(sorted(p.name for p in root.iterdir())[:12]) if root.is_dir() else ""
            raise DatasetError(
                f"dataset.root: {where}{f' (found: {present})' if present else ''}; set dataset.root to the "
                "table file, dataset.file to its name, or dataset.root to a folder of Parquet shards"
            )
        return self._file_source(path)

    def _file_source(self, path: Path) -> TableSource:
        c = self.config
        strings = [c.user, c.item, c.label, *([c.category] if c.category else []), *c.extra]
        parquet = c.format == "parquet" or (c.format == "auto" and path.suffix.lower() in PARQUET_SUFFIXES)
        return TableSource([path], parquet, sep=c.sep, strings=strings, texts=[c.timestamp])

    def raw_file(self) -> Path:
        """The table file (the shards' folder for a folder of shards)."""
        source = self.source()
        return source.root if source.root is not None else source.files[0]

    def load(self) -> DatasetSplits:
        source = self.source()
        cache = ArrayCache("events", FORMAT_VERSION, self.config.cache_dir)
        digests = parquet_footer_digests(source.root, source.files) if source.root is not None else None
        cached = cache.load_or_build(
            source.files, protocol_options(self.config), lambda: self.build(source), digests=digests
        )
        data = cached.data
        if self.config.aux_negatives:
            data.resample = AuxNegatives.of(
                data, cached.extras["popularity"], cached.extras.get("item_cat"), self.config.seed
            )
        return data

    def read(self, source: TableSource) -> Events:
        c = self.config
        columns = [c.user, c.item, c.label, c.timestamp, *([c.category] if c.category else []), *c.extra]
        source.check_columns(columns, "map yours with dataset.user/item/category/label/timestamp/extra")
        return EventsReader(source, c, row_filter(c.filter, source.dataset().schema)).read()

    def build(self, source: TableSource | Path) -> CachedData:
        """The arrays from the table (``source``, or one table file)."""
        c = self.config
        if isinstance(source, Path):
            shards = source.is_dir()
            source = (
                TableSource(parquet_shards(source), True, root=source)
                if shards
                else self._file_source(source)
            )
        name = Path(source.name).name
        rng = np.random.default_rng(c.seed)
        events = self.read(source)
        # popped from ``events`` so that each array is freed as soon as the build is done with it
        user, item, label, time = events.ids.pop(c.user), events.ids.pop(c.item), events.label, events.time
        events.label = events.time = np.zeros(0)
        n_items = len(events.keys[c.item])
        vocabularies = {"item": _vocabulary(events.keys[c.item])}
        item_cat: np.ndarray | None = None
        n_cats, several = 0, 0
        if c.category:
            cat = events.ids.pop(c.category)
            n_cats = len(events.keys[c.category])
            first = np.full(n_items + 1, len(item), dtype=np.int64)  # first event of every item
            np.minimum.at(first, item, np.arange(len(item), dtype=np.int64))
            item_cat = np.r_[0, cat[first[1:]]].astype(np.int64)
            several = int(np.count_nonzero(item_cat[item] != cat))
            vocabularies["cat"] = _vocabulary(events.keys[c.category])
            del cat
        extra = {x: (events.ids.pop(x), len(events.keys[x])) for x in c.extra}
        vocabularies |= {x: _vocabulary(events.keys[x]) for x in c.extra}

        seqs = group_by_user(user, time)
        del user
        seqs.position = seqs.position[:0]  # not needed here
        o = seqs.order
        s_item, s_label, owner = item[o], label[o], seqs.owner
        del label
        offsets, end = history_ends(seqs, time[o], s_label > 0)
        hist_item = s_item[s_label > 0]
        if not len(hist_item):
            raise DatasetError(f"{name} has no positive events (column {c.label!r}), so no histories")
        if c.split == "user":
            part = split_users(rng, len(seqs), c.test_frac, c.val_frac)[owner]
        else:
            part = self._time_part(time, events.time_kind, name)[o]
        del time, item
        keep = end >= c.min_history

        columns: dict[str, np.ndarray] = {"user": owner + 1, "item": s_item, "label": s_label}
        if item_cat is not None:
            columns["cat"] = item_cat[s_item]
        for x in list(extra):
            ids, n = extra[x]
            columns[x], extra[x] = ids[o], (np.zeros(0, dtype=np.int64), n)
            del ids
        uid_vocab = 0
        if c.user_feature:
            columns["uid"] = uid_feature(owner + 1, np.where(keep, part, -1))
            uid_vocab = len(seqs) + 1
            vocabularies["uid"] = _vocabulary(events.keys[c.user])
        schema = behaviour_schema(
            n_items,
            n_cats,
            c.max_len,
            uid_vocab=uid_vocab,
            extra={x: n + 1 for x, (_, n) in extra.items()},
            aux_negatives=c.aux_negatives,
        )
        del s_item, s_label
        splits = _gather_splits(
            columns, owner, end, [np.flatnonzero(keep & (part == p)) for p in (TRAIN, VAL, TEST)]
        )
        for split_name, split in zip(("train", "test"), (splits[0], splits[2]), strict=True):
            if not len(split):
                raise DatasetError(
                    f"the {split_name} split of {name} is empty ({len(o)} events, {int((~keep).sum())} "
                    f"with fewer than min_history={c.min_history} earlier positives); lower "
                    "dataset.min_history or add data"
                )
        popularity = np.bincount(hist_item, minlength=n_items + 1)
        data = DatasetSplits(
            schema,
            *splits,
            sequences=Sequences(offsets, sequence_columns(hist_item, item_cat, c.aux_negatives)),
            vocabularies=vocabularies,
        )
        extras = {"popularity": popularity} | ({"item_cat": item_cat} if item_cat is not None else {})
        if c.aux_negatives:
            AuxNegatives.of(data, popularity, item_cat, c.seed)(0)
        data.info = split_stats(
            data,
            events=len(o),
            split=c.split,
            **({"val_from": c.val_from, "test_from": c.test_from} if c.test_from else {}),
            **({"filter": c.filter} if c.filter else {}),
            extra_columns={x: n for x, (_, n) in extra.items()},
            events_with_another_category_than_their_items_first=several,
            dropped={f"rows_with_fewer_than_{c.min_history}_earlier_positives": int((~keep).sum())},
        )
        return CachedData(data, extras)

    def _time_part(self, time: np.ndarray, kind: str, name: str) -> np.ndarray:
        """Split per event (input order). With ``test_from``: rows at/after it are test, rows in
        [val_from, test_from) validation (without ``val_from``: the latest ``val_frac`` of the rows
        before test_from), the rest training. Otherwise the latest ``test_frac`` events are test and the
        ``val_frac`` before them validation (ranked by time, ties by input order)."""
        c = self.config
        n = len(time)
        if c.test_from:
            test = time >= self._boundary("test_from", kind)
            if c.val_from:
                val = (time >= self._boundary("val_from", kind)) & ~test
            else:
                before = np.flatnonzero(~test)
                n_val = int(round(len(before) * c.val_frac)) if c.val_frac > 0 else 0
                val = np.zeros(n, dtype=bool)
                val[before[latest(time[before], n_val)]] = True
            part = np.where(test, TEST, np.where(val, VAL, TRAIN)).astype(np.int8)
            counts = np.bincount(part, minlength=3)
            lo, hi = (
                (time.min(), time.max())
                if kind == NUMBER
                else (np.datetime64(int(time.min()), "ns"), np.datetime64(int(time.max()), "ns"))
            )
            for p, what in ((TEST, "test"), (VAL, "validation"), (TRAIN, "training")):
                if counts[p] == 0 and (p != VAL or c.val_from):
                    raise DatasetError(
                        f"dataset.test_from={c.test_from!r}"
                        + (f", val_from={c.val_from!r}" if c.val_from else "")
                        + f" leave the {what} split of {name} empty (its {n} events span {lo} .. {hi})"
                    )
            return part
        n_test = max(1, int(round(n * c.test_frac)))
        n_val = int(round(n * c.val_frac)) if c.val_frac > 0 else 0
        part = np.zeros(n, dtype=np.int8)
        part[latest(time, n_test + n_val)] = VAL
        part[latest(time, n_test)] = TEST
        return part

    def _boundary(self, option: str, kind: str) -> float | int:
        """A split boundary in the timestamp column's terms (epoch number, or int64 ns)."""
        c = self.config
        text = str(getattr(c, option)).strip()
        given = _boundary_kind(text)
        if kind == NUMBER:
            if given == NUMBER:
                return float(text)
            seconds = int(np.datetime64(text, "s").astype(np.int64))
            raise DatasetError(
                f"dataset.{option}={text!r} is a date-time but column {c.timestamp!r} holds epoch numbers: "
                f"give the boundary in the column's unit, e.g. {seconds} (seconds) or {seconds * 1000} "
                "(milliseconds)"
            )
        if given == DATETIME:
            return int(np.datetime64(text, "ns").astype(np.int64))
        raise DatasetError(
            f"dataset.{option}={text!r} is a number but column {c.timestamp!r} holds date-times: give a date "
            "(2024-01-07) or a date-time (2024-01-07T12:00:00)"
        )


def _gather_splits(
    columns: dict[str, np.ndarray], seq: np.ndarray, end: np.ndarray, rows: list[np.ndarray]
) -> list[Split]:
    """:func:`make_split` for several row sets, one column at a time: each column is gathered once
    for all splits (the splits are contiguous slices of it) and the full column is dropped before
    the next, so the peak holds the row-level columns plus one gathered column, not two copies."""
    everything = np.concatenate(rows)
    bounds = np.cumsum([0, *(len(r) for r in rows)])
    out: list[dict[str, np.ndarray]] = [{} for _ in rows]
    for name in list(columns):
        gathered = np.take(columns.pop(name), everything)
        for k, part in enumerate(out):
            part[name] = gathered[bounds[k] : bounds[k + 1]]
    seq, end = np.take(seq, everything).astype(np.int64), np.take(end, everything).astype(np.int64)
    return [
        Split(columns=part, seq=seq[bounds[k] : bounds[k + 1]], end=end[bounds[k] : bounds[k + 1]])
        for k, part in enumerate(out)
    ]


def latest(time: np.ndarray, k: int) -> np.ndarray:
    """A mask of the ``k`` latest rows by (time, input position) — the last ``k`` of a stable sort by
    time — found with one partition (linear time) instead of a sort."""
    n = len(time)
    mask = np.zeros(n, dtype=bool)
    if k <= 0:
        return mask
    if k >= n:
        mask[:] = True
        return mask
    cut = np.partition(time, n - k)[n - k]  # the k-th latest time
    mask |= time > cut
    tied = np.flatnonzero(time == cut)
    mask[tied[len(tied) - (k - int(np.count_nonzero(mask))) :]] = True
    return mask


def _vocabulary(keys: pa.Array) -> np.ndarray:
    """Row i of an embedding table → its raw id as a string; row 0 (padding / unknown) is ""."""
    return np.concatenate([np.array([""]), key_strings(keys)])
