"""Reading impression tables with pyarrow: a CSV file, a Parquet file, or a folder of Parquet shards.

* :class:`TableSource` — which files make up the table (a folder's ``*.parquet`` / ``*.pq`` shards at any
  depth, hidden and ``_``-prefixed paths skipped; ``key=value`` folders are hive partitions whose keys
  become columns), opened as one :mod:`pyarrow.dataset`.
* :meth:`TableSource.batches` — record batches of the mapped columns only, file by file in path order
  (Parquet: multi-threaded over row groups and columns; CSV: typed, multi-threaded parsing), with an
  optional :func:`row_filter` pushed down (partition pruning, row-group skipping by statistics).
  CSV id/label columns are read dictionary-encoded, so memory stays O(rows × 4 bytes) per id column.
* :class:`KeyEncoder` — dictionary-encodes an id column batch by batch and, at the end, gives dense ids
  1..n in sorted raw-key order (0 stays padding) and the raw keys as strings.
* :meth:`TableSource.where` — ``file:line`` (CSV) or ``file, row N`` (Parquet) of a batch row, also when
  a filter skipped rows before it (error path only: the file is re-read to find the raw row).

Every failure is a one-line :class:`~ctrbench.datasets.rawfiles.DatasetError` naming the file.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as ds

from ctrbench.datasets.rawfiles import DatasetError, malformed

PARQUET_SUFFIXES = (".parquet", ".pq")
DICT = pa.dictionary(pa.int32(), pa.string())
OPS = {
    "==": "==", "=": "==", "eq": "==", "!=": "!=", "ne": "!=",
    "<": "<", "lt": "<", "<=": "<=", "le": "<=", ">": ">", "gt": ">", ">=": ">=", "ge": ">=",
    "in": "in", "not in": "not in", "not_in": "not in",
}  # fmt: skip
FILTER_HELP = (
    "a list of [column, op, value] triples, op one of ==, !=, <, <=, >, >=, in, not_in (or eq, ne, lt, le, "
    "gt, ge), e.g. 'dataset.filter=[[date,ge,2024-01-07],[country,in,[de,fr]]]'"
)


def parquet_shards(root: Path) -> list[Path]:
    """The Parquet files under ``root`` (any depth, sorted), skipping hidden and ``_``-prefixed paths."""
    found = [
        p
        for p in root.rglob("*")
        if p.suffix.lower() in PARQUET_SUFFIXES
        and p.is_file()
        and not any(part.startswith((".", "_")) for part in p.relative_to(root).parts)
    ]
    return sorted(found)


@dataclass
class TableSource:
    """One table made of ``files`` (CSV: one file; Parquet: one file or shards under ``root``)."""

    files: list[Path]
    parquet: bool
    root: Path | None = None  # the shards' folder (hive partitions are relative to it)
    sep: str = ","
    strings: Sequence[str] = ()  # CSV columns read as dictionary-encoded strings (ids, labels)
    texts: Sequence[str] = ()  # CSV columns read as plain strings (times)
    _dataset: ds.Dataset | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return str(self.root) if self.root is not None else str(self.files[0])

    def dataset(self) -> ds.Dataset:
        if self._dataset is None:
            self._dataset = self._open()
        return self._dataset

    def _open(self) -> ds.Dataset:
        paths = [str(p) for p in self.files]
        try:
            if self.parquet:
                if self.root is None:
                    return ds.dataset(paths, format="parquet")
                return ds.dataset(
                    paths, format="parquet", partitioning="hive", partition_base_dir=str(self.root)
                )
            types = {c: DICT for c in self.strings} | {c: pa.string() for c in self.texts}
            fmt = ds.CsvFileFormat(
                parse_options=pacsv.ParseOptions(delimiter=self.sep),
                convert_options=pacsv.ConvertOptions(column_types=types, strings_can_be_null=False),
            )
            return ds.dataset(paths, format=fmt)
        except (pa.ArrowInvalid, OSError) as exc:
            raise self._unreadable(exc) from exc

    def _unreadable(self, exc: Exception) -> DatasetError:
        if not self.parquet:
            path = self.files[0]
            with open(path, "rb") as f:
                start = f.read(4096)
            if not start.strip():
                return DatasetError(f"{path} is empty (expected a header line naming the columns)")
            bad = _first_malformed_line(path, self.sep)
            if bad is not None:
                return bad
            return DatasetError(f"{path} is not a readable CSV file ({_first_line(exc)})")
        import pyarrow.parquet as pq

        for path in self.files:  # name the shard: its footer is read (cheap), not its data
            try:
                pq.ParquetFile(path).close()
            except (pa.ArrowException, OSError) as bad:
                return DatasetError(f"{path} is not a readable Parquet file ({_first_line(bad)})")
        return DatasetError(f"{self.name} is not a readable Parquet table ({_first_line(exc)})")

    def columns(self) -> list[str]:
        return list(self.dataset().schema.names)

    def check_columns(self, wanted: Sequence[str], hint: str) -> None:
        present = self.columns()
        missing = [c for c in wanted if c not in present]
        if missing:
            raise DatasetError(
                f"{self.name} has no column {', '.join(map(repr, missing))} "
                f"(columns: {', '.join(present)}); {hint}"
            )

    def batches(
        self, columns: Sequence[str], filter: ds.Expression | None = None
    ) -> Iterator[tuple[int, int, pa.RecordBatch]]:
        """``(file index, first row of the batch among the file's (filtered) rows, batch)``, in file order."""
        data = self.dataset()
        fragments = {f.path: f for f in data.get_fragments(filter=filter)}  # partition pruning
        try:
            for index, path in enumerate(self.files):
                fragment = fragments.get(str(path))
                if fragment is None:
                    continue
                row = 0
                for batch in fragment.to_batches(
                    schema=data.schema, columns=list(columns), filter=filter, use_threads=True
                ):
                    if batch.num_rows:
                        yield index, row, batch
                        row += batch.num_rows
        except (pa.ArrowInvalid, OSError) as exc:
            raise self._unreadable(exc) from exc

    def where(self, file: int, row: int, filter: ds.Expression | None = None) -> str:
        """``file:line`` (CSV) or ``file, row N`` (Parquet, 0-based) of the ``row``-th (filtered) row."""
        path = self.files[file]
        if filter is not None:
            row = self._raw_row(file, row, filter)
        if self.parquet:
            return f"{path}, row {row}"
        return f"{path}:{_csv_line(path, self.sep, row)}"

    def _raw_row(self, file: int, row: int, filter: ds.Expression) -> int:
        data = self.dataset()
        fragment = next(f for f in data.get_fragments() if f.path == str(self.files[file]))
        table = fragment.to_table(schema=data.schema, columns=_fields_of(filter, data.schema.names))
        table = table.append_column("__row", pa.array(np.arange(table.num_rows)))
        kept = table.filter(filter).column("__row").to_numpy()
        return int(kept[row]) if row < len(kept) else row


def _fields_of(expr: ds.Expression, names: Sequence[str]) -> list[str]:
    text = str(expr)
    return [n for n in names if n in text] or list(names[:1])


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _csv_rows(path: Path, sep: str) -> Iterator[tuple[int, list[str]]]:
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.reader(f, delimiter=sep)
        for row in reader:
            if row:
                yield reader.line_num, row


def _csv_line(path: Path, sep: str, row: int) -> int:
    """The line number of data row ``row`` (0-based, blank lines skipped, after the header)."""
    for k, (line, _) in enumerate(_csv_rows(path, sep)):
        if k == row + 1:
            return line
    return row + 2


def _first_malformed_line(path: Path, sep: str) -> DatasetError | None:
    width = 0
    for line, fields in _csv_rows(path, sep):
        if not width:
            width = len(fields)
        elif len(fields) != width:
            return malformed(path, line, f"{len(fields)} fields, the header has {width}", sep.join(fields))
    return None


def row_filter(triples: Any, schema: pa.Schema) -> ds.Expression | None:
    """``[[column, op, value], ...]`` (all must hold) as a pyarrow expression; values are cast to the
    column's type (so ``2024-01-07`` compares as a date against a timestamp column)."""
    if triples is None or (isinstance(triples, Sequence) and not isinstance(triples, str) and not triples):
        return None
    if isinstance(triples, str) or not isinstance(triples, Sequence):
        raise DatasetError(f"dataset.filter={triples!r} is invalid: must be {FILTER_HELP}")
    if len(triples) == 3 and all(isinstance(x, str | int | float) for x in triples):
        triples = [triples]  # one triple given without the outer list
    expr: ds.Expression | None = None
    for t in triples:
        if isinstance(t, str) or not isinstance(t, Sequence) or len(t) != 3:
            raise DatasetError(f"dataset.filter entry {_plain(t)!r} is invalid: must be {FILTER_HELP}")
        column, op, value = str(t[0]), OPS.get(str(t[1]).strip().lower()), t[2]
        if column not in schema.names:
            raise DatasetError(
                f"dataset.filter entry {_plain(t)!r}: no column {column!r} "
                f"(columns: {', '.join(schema.names)})"
            )
        if op is None:
            raise DatasetError(
                f"dataset.filter entry {_plain(t)!r}: unknown op {t[1]!r}; must be {FILTER_HELP}"
            )
        kind = schema.field(column).type
        if pa.types.is_dictionary(kind):
            kind = kind.value_type
        many = op in ("in", "not in")
        several = many and isinstance(value, Sequence) and not isinstance(value, str)
        values = list(value) if several else [value]
        try:
            scalars = [pa.scalar(v).cast(kind) for v in values]
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, TypeError) as exc:
            raise DatasetError(
                f"dataset.filter entry {_plain(t)!r}: {value!r} is not a value of column {column!r} ({kind}; "
                f"{_first_line(exc)})"
            ) from None
        ref = pc.field(column)
        if many:
            test = ref.isin(pa.array([s.as_py() for s in scalars], type=kind))
            test = ~test if op == "not in" else test
        else:
            s = scalars[0]
            test = {
                "==": ref == s, "!=": ref != s, "<": ref < s, "<=": ref <= s, ">": ref > s, ">=": ref >= s,
            }[op]  # fmt: skip
        expr = test if expr is None else expr & test
    return expr


def _plain(value: Any) -> Any:
    """Hydra list nodes as plain lists (for messages)."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [_plain(v) for v in value]
    return value


class KeyEncoder:
    """Raw ids of one column, batch by batch, → dense ids 1..n in sorted raw-key order.

    Every batch is dictionary-encoded (hash, no Python objects); :meth:`finish` unifies the batches'
    dictionaries, sorts the distinct keys once and maps each row's index through the keys' ranks.
    """

    def __init__(self) -> None:
        self.chunks: list[pa.DictionaryArray] = []
        self.ints: list[np.ndarray] = []  # integer ids, kept as they are (see finish)
        self.int_type: pa.DataType | None = None
        self.rows = 0

    def add(self, values: pa.Array) -> pa.Array:
        self.rows += len(values)
        if pa.types.is_integer(values.type) and not self.chunks:
            self.ints.append(values.to_numpy(zero_copy_only=False).astype(np.int64, copy=False))
            self.int_type = values.type
            return values
        if not pa.types.is_dictionary(values.type):
            values = pc.dictionary_encode(values)
        if self.ints:  # integers, then another type: encode the integers too
            self.chunks = [pc.dictionary_encode(pa.array(v)) for v in self.ints]
            self.ints = []
        self.chunks.append(values)
        return values

    def finish(self) -> tuple[np.ndarray, pa.Array]:
        """``(ids int64 1..n per row, sorted keys)``: ``keys[id - 1]`` is the raw id of ``id``."""
        if self.ints:
            return self._finish_ints()
        if not self.chunks:
            return np.zeros(0, dtype=np.int64), pa.array([], pa.string())
        unified = pa.chunked_array(self.chunks).unify_dictionaries()
        self.chunks = []
        dictionary = unified.chunk(0).dictionary
        order = pc.array_sort_indices(dictionary).to_numpy()
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(1, len(order) + 1)
        out = np.empty(self.rows, dtype=np.int64)
        at = 0
        for chunk in unified.chunks:
            n = len(chunk)
            np.take(rank, chunk.indices.to_numpy(), out=out[at : at + n])
            at += n
        return out, dictionary.take(pa.array(order))

    def _finish_ints(self) -> tuple[np.ndarray, pa.Array]:
        """Integer ids: a presence table over their range when it is small (linear time), else a sort."""
        values = np.concatenate(self.ints) if len(self.ints) > 1 else self.ints[0]
        self.ints = []
        lo, hi = int(values.min()), int(values.max())
        if hi - lo <= 4 * len(values) + 1024:
            present = np.zeros(hi - lo + 1, dtype=bool)
            present[values - lo] = True
            rank = np.cumsum(present, dtype=np.int64)
            keys = np.flatnonzero(present) + lo
            return rank[values - lo], pa.array(keys, type=self.int_type)
        keys, inverse = np.unique(values, return_inverse=True)
        return inverse.astype(np.int64).reshape(-1) + 1, pa.array(keys, type=self.int_type)


def key_strings(keys: pa.Array) -> np.ndarray:
    """Raw keys as Python strings (an integer id 12 → ``"12"``, as its text in a CSV file)."""
    if not pa.types.is_string(keys.type) and not pa.types.is_large_string(keys.type):
        keys = keys.cast(pa.string())
    return np.asarray(keys.to_numpy(zero_copy_only=False), dtype=object).astype(str)
