"""The dataset → engine contract: field schema and the arrays a dataset plugin serves.

Every protocol in ctrbench builds a sample's history as a *prefix* of its user's time-ordered
behaviour sequence, so behaviours are stored once per user (one flat array + offsets) and a row
only records which user sequence it reads and where its history ends. The engine gathers and pads
histories per batch, which keeps memory O(behaviours) instead of O(rows × max_len).

Id 0 of every categorical/sequence table is reserved for padding; real ids start at 1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

FieldKind = Literal["categorical", "sequence", "dense"]


class MissingFieldError(ValueError):
    """A model needs a field the dataset does not provide."""


@dataclass(frozen=True)
class Field:
    """One input field.

    name:   key in the batch dict.
    kind:   ``categorical`` (one id per row), ``sequence`` (padded ids per row, gathered from
            :class:`Sequences`), or ``dense`` (float vector of width ``dim``).
    vocab:  table size including the padding row 0 (ignored for dense fields).
    table:  embedding table shared with other fields (``hist_item`` shares ``item``); defaults to name.
    length: for sequences, the batch key holding valid lengths (e.g. ``hist_len``).
    negative_of: for sequences of sampled negatives (DIEN auxiliary loss), the behaviour field
            they mirror position by position; models treat them as auxiliary inputs, not features.
    dim:    width of a dense field.
    """

    name: str
    kind: FieldKind
    vocab: int = 0
    table: str = ""
    length: str | None = None
    negative_of: str | None = None
    dim: int = 1

    def __post_init__(self) -> None:
        if not self.table:
            object.__setattr__(self, "table", self.name)


@dataclass(frozen=True)
class Schema:
    """Fields, the label key, the GAUC group field (user id) and the history cap."""

    fields: tuple[Field, ...]
    group: str = "user"
    label: str = "label"
    max_len: int = 50
    source: str = ""  # the dataset plugin's name, for error messages (set by the engine)

    def __getitem__(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"no field {name!r} in schema (fields: {', '.join(self.names)})")

    def __contains__(self, name: object) -> bool:
        return any(f.name == name for f in self.fields)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fields]

    def of_kind(self, kind: FieldKind) -> list[Field]:
        return [f for f in self.fields if f.kind == kind]

    @property
    def categorical(self) -> list[Field]:
        return self.of_kind("categorical")

    @property
    def behaviours(self) -> list[Field]:
        """Behaviour sequences that are model features (sampled negatives excluded)."""
        return [f for f in self.of_kind("sequence") if f.negative_of is None]

    @property
    def negatives(self) -> list[Field]:
        return [f for f in self.of_kind("sequence") if f.negative_of is not None]

    @property
    def dense(self) -> list[Field]:
        return self.of_kind("dense")

    def require(self, model: str, *names: str, behaviours: bool = False, negatives: bool = False) -> None:
        """Fail with one line when a model needs fields this schema lacks (raises MissingFieldError)."""
        missing = [n for n in names if n not in self]
        if behaviours and not self.behaviours:
            missing.append("a behaviour sequence (e.g. hist_item)")
        if negatives and not self.negatives:
            missing.append("negative behaviour sequences (e.g. neg_hist_item)")
        if missing:
            raise MissingFieldError(
                f"model {model!r} needs {', '.join(missing)}, which dataset {self.source or '?'!r} does not "
                f"provide (fields: {', '.join(self.names)})"
            )

    def tables(self) -> dict[str, int]:
        """Embedding table name → vocabulary size (largest vocab among the fields sharing it)."""
        out: dict[str, int] = {}
        for f in self.fields:
            if f.kind != "dense":
                out[f.table] = max(out.get(f.table, 0), f.vocab)
        return out


@dataclass
class Sequences:
    """All users' behaviour sequences, stored once.

    offsets: int64 (n_seq + 1,), sequence s occupies ``columns[k][offsets[s]:offsets[s+1]]``.
    columns: sequence field name → flat int64 array of ids (time order within each sequence),
             all of length ``offsets[-1]``.
    """

    offsets: np.ndarray
    columns: dict[str, np.ndarray]


@dataclass
class Split:
    """One split (train/val/test): row-level arrays plus where each row's history lies.

    columns: field name → array with one entry per row (categorical int64, dense float32 of
             shape (n, dim)), plus the label (float32 0/1) under the schema's label key.
    seq:     int64 per row, index of the sequence in :class:`Sequences` the history is read from.
    end:     int64 per row, exclusive end position inside that sequence; the history is
             ``sequence[max(0, end - max_len):end]`` (the most recent ``max_len`` behaviours).
    """

    columns: dict[str, np.ndarray]
    seq: np.ndarray | None = None
    end: np.ndarray | None = None

    def __len__(self) -> int:
        return len(next(iter(self.columns.values())))


@dataclass
class DatasetSplits:
    """What a dataset plugin's ``load()`` returns."""

    schema: Schema
    train: Split
    val: Split
    test: Split
    sequences: Sequences | None = None
    info: dict[str, object] = field(default_factory=dict)
    # Optional: re-draw per-epoch randomness (e.g. auxiliary-loss negatives) *in place* in the
    # arrays above; the engine calls it with the epoch number before every training epoch.
    resample: Callable[[int], None] | None = None
    # Optional: the raw id behind every embedding row, per table: ``vocabularies[table][i]`` is the raw
    # value (as a string) that row i of the table embeds; row 0 (padding / unknown) is "". Stored with
    # the dataset's cache; a warm-started run maps an old run's rows to the new data's rows through them.
    vocabularies: dict[str, np.ndarray] | None = None
