"""Protocol building blocks shared by the real datasets (Amazon, MovieLens, events).

* :func:`remap` — raw keys → dense ids 1..n (0 stays the padding id of the schema contract).
* :func:`group_by_user` — behaviours ordered per user by time (ties keep file order), stored once
  as one flat array + offsets (architecture §7); a row then points at (sequence, end).
* :func:`history_ends` — sequences of all or only positive behaviours, and each row's history
  end = the number of those strictly earlier in time.
* :func:`uniform_unseen` — DIN build_dataset negatives: uniform over items the user never had.
* :class:`PopularitySampler` — DIEN negatives: an item with probability ∝ its number of
  behaviours (a random entry of the review list), never the positive it replaces.
* :class:`AuxNegatives` — DIEN auxiliary-loss negatives per behaviour position, re-drawn in place
  before every training epoch (``DatasetSplits.resample``).
* :func:`split_users` — seeded user partition into train/val/test; :func:`uid_feature` — the user
  id as a feature, 0 for users without training rows.
* :func:`behaviour_schema`, :func:`sequence_columns`, :func:`make_split`, :func:`split_stats` —
  the contract's objects and the statistics every dataset reports.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ctrbench.datasets.rawfiles import DatasetError
from ctrbench.schema import DatasetSplits, Field, Schema, Split

SPLITS = ("train", "val", "test")
TRAIN, VAL, TEST = 0, 1, 2
_MAX_REDRAWS = 1000


def remap(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dense ids 1..n in sorted key order; returns ``(ids int64, keys)`` with ``keys[id - 1]``."""
    keys, inverse = np.unique(values, return_inverse=True)
    return inverse.astype(np.int64).reshape(-1) + 1, keys


@dataclass
class UserSequences:
    """Behaviours grouped per user: ``order`` permutes input rows into (user, time) order.

    offsets: (n_users + 1,) sequence s is ``[offsets[s], offsets[s+1])`` of the grouped arrays.
    owner:   sequence index of every grouped behaviour; position: its index inside the sequence.
    user:    the input user code of every sequence.
    """

    order: np.ndarray
    offsets: np.ndarray
    owner: np.ndarray
    position: np.ndarray
    user: np.ndarray

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1


def _bits(n: int) -> int:
    return max(int(n), 1).bit_length()


def user_time_order(user: np.ndarray, time: np.ndarray) -> np.ndarray:
    """``np.lexsort((time, user))`` (by user, then time, equal pairs in input order), faster.

    Integer users and times are packed into one int64 key ``(user, time - min, index)`` (times divided
    by their common step, e.g. 10⁹ for date-times in ns recorded to the second) when the bit widths fit
    in 63 bits and sorted with numpy's SIMD sort (no argsort); otherwise
    ``(user, time)`` packed without the index is argsorted and each run of equal keys is put back
    into input order. Floating times (or keys too wide) use ``lexsort`` itself.
    """
    n = len(user)
    if n == 0 or user.dtype.kind not in "iu" or time.dtype.kind not in "iu":
        return np.lexsort((time, user))
    u_lo, t_lo = int(user.min()), int(time.min())
    rel = time.astype(np.int64) - t_lo
    u_bits, t_bits, n_bits = _bits(int(user.max()) - u_lo), _bits(int(rel.max())), _bits(n - 1)
    if u_bits + t_bits + n_bits > 63:  # e.g. date-times in ns recorded to the second: drop common zeros
        step = int(np.gcd.reduce(rel))
        if step > 1:
            rel //= step
            t_bits = _bits(int(rel.max()))
    if u_bits + t_bits > 63:
        return np.lexsort((time, user))
    key = (user.astype(np.int64) - u_lo) << t_bits
    key |= rel
    del rel
    if u_bits + t_bits + n_bits <= 63:
        key <<= n_bits
        key |= np.arange(n, dtype=np.int64)
        key.sort()
        key &= (1 << n_bits) - 1
        return key
    order = np.argsort(key)
    key = key[order]
    tied = np.flatnonzero(key[1:] == key[:-1])
    if len(tied):  # runs of equal (user, time): restore input order inside each run
        at = np.unique(np.r_[tied, tied + 1])
        run = np.cumsum(np.r_[True, key[at[1:]] != key[at[:-1]]] | np.r_[True, at[1:] != at[:-1] + 1])
        order[at] = order[at][np.lexsort((order[at], run))]
    return order


def group_by_user(user: np.ndarray, time: np.ndarray) -> UserSequences:
    """Order behaviours by (user, time); equal times keep their input order (stable sort)."""
    order = user_time_order(user, time)
    u = user[order]
    n = len(u)
    starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]]) if n else np.zeros(0, dtype=np.int64)
    offsets = np.r_[starts, n].astype(np.int64)
    lengths = np.diff(offsets)
    owner = np.repeat(np.arange(len(starts), dtype=np.int64), lengths)
    position = np.arange(n, dtype=np.int64) - offsets[owner]
    return UserSequences(order, offsets, owner, position, u[starts])


def history_ends(
    seqs: UserSequences, time: np.ndarray, in_history: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Sequences made of the grouped behaviours flagged ``in_history`` (all, or positives only), and
    for every grouped behaviour the end of its history: how many flagged behaviours of the same user
    are strictly earlier in time (equal times are not history). Returns ``(offsets, end)``."""
    owner = seqs.owner
    n = len(owner)
    new_tie = np.r_[True, (owner[1:] != owner[:-1]) | (time[1:] != time[:-1])] if n else np.zeros(0, bool)
    tie_start = np.maximum.accumulate(np.where(new_tie, np.arange(n), 0)) if n else np.zeros(0, np.int64)
    before = np.r_[0, np.cumsum(in_history, dtype=np.int64)]  # flagged behaviours before each index
    offsets = before[seqs.offsets].astype(np.int64)
    end = before[tie_start] - before[seqs.offsets[owner]]
    return offsets, end.astype(np.int64)


def _contains(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    idx = np.searchsorted(sorted_keys, keys)
    idx = np.minimum(idx, max(len(sorted_keys) - 1, 0))
    return (sorted_keys[idx] == keys) if len(sorted_keys) else np.zeros(len(keys), dtype=bool)


def uniform_unseen(
    rng: np.random.Generator, owner: np.ndarray, item: np.ndarray, n_items: int, at: np.ndarray
) -> np.ndarray:
    """One negative per behaviour index in ``at``: uniform over ids 1..n_items that the behaviour's
    owner never interacted with (DIN build_dataset ``gen_neg``; collisions are redrawn)."""
    base = np.int64(n_items + 1)
    seen = np.unique(owner.astype(np.int64) * base + item)
    distinct = np.bincount(seen // base, minlength=int(owner.max(initial=-1)) + 1)
    full = np.flatnonzero(distinct >= n_items)
    if len(full):
        raise DatasetError(
            f"{len(full)} user(s) interacted with every one of the {n_items} items, so no unseen item is "
            "left to sample as their negative; use a larger input"
        )
    out = rng.integers(1, n_items + 1, size=len(at))
    who = owner[at].astype(np.int64) * base
    todo = np.arange(len(at))
    for _ in range(_MAX_REDRAWS):
        hit = _contains(seen, who[todo] + out[todo])
        todo = todo[hit]
        if not len(todo):
            return out
        out[todo] = rng.integers(1, n_items + 1, size=len(todo))
    raise DatasetError("could not draw unseen negatives (users have seen almost every item)")


class PopularitySampler:
    """Items drawn with probability ∝ ``counts[item]`` and different from a given item.

    This is DIEN's sampler (a uniformly random entry of the list of all behaviours), done with one
    cumulative count array; an excluded draw is redrawn, so the result is popularity-proportional
    over the other items.
    """

    def __init__(self, counts: np.ndarray) -> None:
        if np.count_nonzero(counts) < 2:
            raise DatasetError("popularity sampling needs at least 2 distinct items in the data")
        self.cum = np.cumsum(counts.astype(np.int64))
        self.total = int(self.cum[-1])

    def draw(self, rng: np.random.Generator, exclude: np.ndarray) -> np.ndarray:
        """One item per entry of ``exclude``, never equal to it."""
        out = np.searchsorted(self.cum, rng.integers(0, self.total, size=len(exclude)), side="right")
        todo = np.flatnonzero(out == exclude)
        for _ in range(_MAX_REDRAWS):
            if not len(todo):
                return out.astype(np.int64)
            out[todo] = np.searchsorted(self.cum, rng.integers(0, self.total, size=len(todo)), side="right")
            todo = todo[out[todo] == exclude[todo]]
        raise DatasetError("popularity sampling kept drawing the excluded item (one item dominates the data)")


class AuxNegatives:
    """DIEN auxiliary-loss negatives (DIEN §4.2, eq. 5): for every behaviour position one item drawn
    ∝ popularity, different from the clicked one; ``__call__(epoch)`` re-draws them in place
    (the engine's tensors share these arrays), seeded by (seed, epoch)."""

    def __init__(
        self,
        sampler: PopularitySampler,
        item_cat: np.ndarray | None,
        hist_item: np.ndarray,
        neg_item: np.ndarray,
        neg_cat: np.ndarray | None,
        seed: int,
    ) -> None:
        self.sampler, self.item_cat, self.hist_item = sampler, item_cat, hist_item
        self.neg_item, self.neg_cat, self.seed = neg_item, neg_cat, seed

    @classmethod
    def of(
        cls, data: DatasetSplits, popularity: np.ndarray, item_cat: np.ndarray | None, seed: int
    ) -> AuxNegatives:
        """The sampler over ``data.sequences``' ``hist_item`` → ``neg_hist_item``/``neg_hist_cat``."""
        cols = data.sequences.columns  # type: ignore[union-attr]
        return cls(
            PopularitySampler(np.asarray(popularity)),
            None if item_cat is None else np.asarray(item_cat),
            cols["hist_item"],
            cols["neg_hist_item"],
            cols.get("neg_hist_cat"),
            seed,
        )

    def __call__(self, epoch: int) -> None:
        rng = np.random.default_rng([self.seed, 0xA0C5, epoch])
        _overwrite(self.neg_item, self.sampler.draw(rng, self.hist_item))
        if self.neg_cat is not None and self.item_cat is not None:
            _overwrite(self.neg_cat, self.item_cat[self.neg_item])


def _overwrite(target: np.ndarray, values: np.ndarray) -> None:
    """``target[:] = values``, writing only the entries that change: on a copy-on-write map of the
    cache, a page whose values are already right (epoch 0's draw is stored at build time) stays
    shared with the other processes instead of becoming a private copy."""
    np.copyto(target, values, where=target != values)


def sequence_columns(
    hist_item: np.ndarray, item_cat: np.ndarray | None, aux_negatives: bool
) -> dict[str, np.ndarray]:
    """Flat behaviour columns: ``hist_item``, ``hist_cat`` (when there are categories) and, for the
    auxiliary loss, zero-filled ``neg_hist_*`` that :class:`AuxNegatives` fills."""
    cols = {"hist_item": np.ascontiguousarray(hist_item, dtype=np.int64)}
    if item_cat is not None:
        cols["hist_cat"] = item_cat[hist_item].astype(np.int64)
    if aux_negatives:
        for name in list(cols):
            cols[f"neg_{name}"] = np.zeros_like(cols[name])
    return cols


def split_users(rng: np.random.Generator, n_users: int, test_frac: float, val_frac: float) -> np.ndarray:
    """Split index per user (0 train, 1 val, 2 test): ``round(test_frac·n)`` random users to test,
    then ``round(val_frac·rest)`` of the others to validation (at least one each when asked)."""
    n_test = int(round(n_users * test_frac)) if test_frac > 0 else 0
    n_test = max(n_test, 1 if test_frac > 0 else 0)
    rest = n_users - n_test
    n_val = max(int(round(rest * val_frac)), 1) if val_frac > 0 else 0
    if rest - n_val < 1:
        raise DatasetError(
            f"{n_users} users are too few to split into train/val/test with test_frac={test_frac} "
            f"and val_frac={val_frac}"
        )
    part = np.zeros(n_users, dtype=np.int8)
    perm = rng.permutation(n_users)
    part[perm[:n_test]] = TEST
    part[perm[n_test : n_test + n_val]] = VAL
    return part


def behaviour_schema(
    n_items: int,
    n_cats: int,
    max_len: int,
    *,
    uid_vocab: int = 0,
    extra: dict[str, int] | None = None,
    aux_negatives: bool = True,
) -> Schema:
    """Candidate ``item``/``cat``, behaviours ``hist_item``/``hist_cat`` (sharing their tables), the
    optional user-id feature ``uid``, extra categorical fields and DIEN's ``neg_hist_*``.

    ``n_cats = 0`` means the data has no category (no ``cat``/``hist_cat`` fields). The GAUC group
    is the row column ``user`` (a column, not a feature).
    """
    fields: list[Field] = []
    if uid_vocab:
        fields.append(Field("uid", "categorical", vocab=uid_vocab))
    fields.append(Field("item", "categorical", vocab=n_items + 1))
    if n_cats:
        fields.append(Field("cat", "categorical", vocab=n_cats + 1))
    for name, vocab in (extra or {}).items():
        fields.append(Field(name, "categorical", vocab=vocab))
    fields.append(Field("hist_item", "sequence", vocab=n_items + 1, table="item", length="hist_len"))
    if n_cats:
        fields.append(Field("hist_cat", "sequence", vocab=n_cats + 1, table="cat", length="hist_len"))
    if aux_negatives:
        fields.append(
            Field("neg_hist_item", "sequence", n_items + 1, "item", "hist_len", negative_of="hist_item")
        )
        if n_cats:
            fields.append(
                Field("neg_hist_cat", "sequence", n_cats + 1, "cat", "hist_len", negative_of="hist_cat")
            )
    return Schema(fields=tuple(fields), group="user", label="label", max_len=max_len)


def make_split(columns: dict[str, np.ndarray], seq: np.ndarray, end: np.ndarray, rows: np.ndarray) -> Split:
    """The rows ``rows`` (indices or mask) of row-level arrays as a :class:`Split`."""
    return Split(
        columns={k: np.ascontiguousarray(v[rows]) for k, v in columns.items()},
        seq=np.ascontiguousarray(seq[rows], dtype=np.int64),
        end=np.ascontiguousarray(end[rows], dtype=np.int64),
    )


def uid_feature(user: np.ndarray, part: np.ndarray) -> np.ndarray:
    """User-id feature per row: the user id for users with training rows, 0 (unknown) for the
    others, as in DIEN's vocabulary, which is built from the training file only."""
    known = np.zeros(int(user.max(initial=0)) + 1, dtype=bool)
    known[user[part == TRAIN]] = True
    return np.where(known[user], user, 0).astype(np.int64)


def _distinct(values: np.ndarray) -> int:
    """How many distinct values (a count table for small non-negative ids, else a sort)."""
    values = np.asarray(values)
    if (
        values.dtype.kind in "iu"
        and len(values)
        and 0 <= values.min()
        and values.max() <= 4 * len(values) + 1024
    ):
        return int(np.count_nonzero(np.bincount(values)))
    return int(len(np.unique(values)))


def split_stats(data: DatasetSplits, **extra: object) -> dict[str, object]:
    """Statistics every dataset reports: sizes, rows/positives/users per split, mean history length
    (as the model sees it, capped at ``max_len``), plus dataset-specific entries (``dropped`` ...)."""
    schema = data.schema
    tables = schema.tables()
    stats: dict[str, object] = {
        "users": int(len(data.sequences.offsets) - 1) if data.sequences is not None else 0,
        "items": tables.get("item", 1) - 1,
        "categories": tables.get("cat", 1) - 1,
        "behaviours": int(data.sequences.offsets[-1]) if data.sequences is not None else 0,
        "max_len": schema.max_len,
    }
    rows, positives, users, hist = {}, {}, {}, {}
    for name in SPLITS:
        split: Split = getattr(data, name)
        label = split.columns[schema.label]
        rows[name] = len(split)
        positives[name] = int(label.sum())
        users[name] = _distinct(split.columns[schema.group])
        ends = split.end if split.end is not None else np.zeros(0)
        hist[name] = round(float(np.minimum(ends, schema.max_len).mean()), 3) if len(ends) else 0.0
    stats.update(
        rows=rows,
        positives=positives,
        pos_rate={k: round(positives[k] / rows[k], 4) if rows[k] else 0.0 for k in SPLITS},
        users_per_split=users,
        mean_hist_len=hist,
    )
    stats.update(extra)
    return stats
