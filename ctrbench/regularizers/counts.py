"""Feature-id occurrence counts n_j over the training split (DIN eq. 6–7, frequency filter).

n_j is the number of occurrences of id j in all training samples: once per row whose candidate
(or other categorical feature of that table) is j, plus once per position of a row's history
holding j. Histories are prefixes of stored per-user sequences, so the history part is counted
in O(rows + behaviours): a difference array gives how many rows' windows cover each stored
position, and a weighted ``bincount`` adds those coverages per id.
"""

from __future__ import annotations

import numpy as np

from ctrbench.regularizers.tables import feature_fields
from ctrbench.schema import DatasetSplits


def window_coverage(offsets: np.ndarray, seq: np.ndarray, end: np.ndarray, max_len: int) -> np.ndarray:
    """How many rows' histories ``sequence[max(0, end-max_len):end]`` cover each stored position."""
    start = offsets[seq] + np.maximum(end - max_len, 0)
    stop = offsets[seq] + end
    size = int(offsets[-1]) + 1
    diff = np.bincount(start, minlength=size) - np.bincount(stop, minlength=size)
    return np.cumsum(diff[:-1])


def id_counts(data: DatasetSplits, tables: list[str]) -> dict[str, np.ndarray]:
    """Table name → int64 array of length vocab: n_j over the training split (n_0 = 0)."""
    schema, train = data.schema, data.train
    sizes = schema.tables()
    counts = {t: np.zeros(sizes[t], dtype=np.int64) for t in tables}
    coverage = None
    for table in tables:
        for f in feature_fields(schema, table):
            if f.kind == "categorical":
                counts[table] += np.bincount(train.columns[f.name], minlength=sizes[table])[: sizes[table]]
                continue
            if data.sequences is None or train.seq is None or train.end is None:
                continue
            if coverage is None:
                coverage = window_coverage(data.sequences.offsets, train.seq, train.end, schema.max_len)
            ids = data.sequences.columns[f.name]
            per_id = np.bincount(ids, weights=coverage, minlength=sizes[table])[: sizes[table]]
            counts[table] += per_id.astype(np.int64)
        counts[table][0] = 0
    return counts
