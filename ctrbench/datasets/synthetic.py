"""``dataset=synthetic``: a generated CTR benchmark with drifting multi-interest users.

Generative process. Categories get Zipf popularity ``q_c ∝ rank^-cat_alpha`` and a matching share
of the items; inside a category, item popularity is Zipf ``∝ rank^-item_alpha`` (ids are shuffled,
so ids carry no rank). Each user has ``n_interests`` categories (drawn by popularity) with
Dirichlet(1) weights, a segment ``user_seg`` and a sequence length uniform in
``[min_seq_len, max_seq_len]``. Along the sequence the *active* interest ``z_t`` is a Markov chain:
with probability ``switch_prob`` it is redrawn from the user's weights, otherwise it stays.
Behaviour ``b_t`` is a popularity-sampled item of category ``z_t`` (of a popularity-sampled random
category with probability ``noise``). Every position ``k ≥ 1`` yields one impression of the real
next behaviour ``b_k`` plus ``negatives`` popularity-sampled items, each with history
``b_0..b_{k-1}`` (the last ``max_len``) and a random context ``ctx``. The click is
``y ~ Bernoulli(sigmoid(s))`` with, for candidate item ``i`` of category ``c``:

    s = β + w_hist·A + w_interest·[c = z_k] + w_pop·pop(i) + u_item(i) + u_user + u_seg + u_ctx
    A = Σ_{d<D} γ^d [cat(b_{k-1-d}) = c] / Σ_{d<D} γ^d,   D = min(k, max_len), γ = recency_decay

``pop(i)`` is the standardized log-popularity, ``u_*`` are Gaussian random effects (``item_std``,
``user_std``, ``seg_std``, ``ctx_std``) and ``β`` is solved so that the mean click probability is
``pos_rate``. The per-item effect ``u_item`` (0 by default; drawn from its own generator, so the
other draws do not move) is signal that only the item id carries: with 10^6 long-tailed items
(``dataset=synthetic_goods``, like DIN's goods_ids) most items are seen a few times, so it is hard to
learn, and BaseModel without regularization over-fits after the first epoch (DIN Fig. 4).
``A`` (candidate vs. history, recency weighted) rewards target attention (DIN); ``z_k`` is only
visible through the order of recent behaviours, which rewards interest evolution (DIEN); a linear
model sees neither. ``info["oracle_auc"]`` is the test AUC of the true click probabilities; with
``item_std > 0``, ``info["oracle_auc_no_item"]`` is the test AUC of the score without ``u_item``
(the best ranking for a model that cannot learn the item effect).

The arrays are generated once per machine and cached like a real dataset's
(:mod:`ctrbench.datasets.cache`, ``dataset.cache_dir``), keyed by the options, the sha256 of this
file and numpy's version: the jobs of a sweep map one shared copy instead of generating one each.
When the cache folder cannot be written the arrays are generated in memory (with a warning).

Days (``dataset.days=[first, last]``): the same process laid out on a fixed timeline of ``n_days``
days, for daily retraining. Each user's behaviours fall on sorted uniform times over the timeline;
a share ``new_item_frac`` of the items is released on a later day (uniform over days 2..n_days; every
category's most popular item exists from day 1) and is never shown before it; every item's
log-popularity follows a daily Gaussian random walk (std ``pop_drift``). Behaviours, negatives and
candidates of a day are drawn by that day's popularity, and ``pop(i)`` in the click score is the
day's. The whole timeline is drawn (so a row's label is the same in every day range) and the rows of
days ``first..last`` are the training split; the rows of day ``last + 1`` are validation and test (the
users split in the proportion ``val_frac : test_frac``, the same users on every day). Embedding rows
hold only the ids the range's arrays use, numbered in raw id order, and ``vocabularies`` gives the raw
id (the global ``user``/``item``/``cat``/... number, as a string) behind every row, so a model of one
range continues on the next one by raw id (``init_from``). The default (``days=null``) is the plain
data above, unchanged, without vocabularies: its rows are the raw ids.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ctrbench.datasets.cache import ArrayCache, CachedData, protocol_options
from ctrbench.metrics import auc
from ctrbench.schema import DatasetSplits, Field, Schema, Sequences, Split

SPLIT_MODES = ("time", "user")
_CHUNK = 1 << 14  # target positions per chunk when scoring histories
FORMAT_VERSION = 1  # of the cached arrays (the key also holds this file's sha256 and numpy's version)


@dataclass
class SyntheticConfig:
    n_users: int = 3000
    n_items: int = 20000
    n_cats: int = 100
    n_segments: int = 8  # values of the user feature ``user_seg``
    n_ctx: int = 24  # values of the context feature ``ctx`` (e.g. hour of day)
    n_interests: int = 3  # interest categories per user
    min_seq_len: int = 5  # behaviours per user, uniform in [min_seq_len, max_seq_len]
    max_seq_len: int = 60
    max_len: int = 50  # history cap (schema max_len)
    cat_alpha: float = 0.8  # Zipf exponent of category popularity
    item_alpha: float = 1.0  # Zipf exponent of item popularity within a category
    switch_prob: float = 0.2  # per-step probability of redrawing the active interest
    noise: float = 0.1  # share of behaviours from a random category
    negatives: int = 1  # random popularity-sampled candidates per real next behaviour
    w_hist: float = 2.0  # weight of the recency-weighted history share of the candidate category
    w_interest: float = 1.5  # weight of candidate category = active interest
    w_pop: float = 0.6  # weight of the candidate's standardized log-popularity
    item_std: float = 0.0  # per-item random effect u_item (only the item id carries it)
    recency_decay: float = 0.8  # γ in the history share
    user_std: float = 0.8
    seg_std: float = 0.3
    ctx_std: float = 0.4
    pos_rate: float = 0.3  # target mean click probability
    split: str = "time"  # time: per user the latest positions go to val/test; user: users are split
    val_frac: float = 0.1
    test_frac: float = 0.1
    seed: int = 0
    days: list[int] | None = None  # [first, last]: train on these days of the timeline, evaluate on the next
    n_days: int = 10  # length of the timeline (with days)
    new_item_frac: float = 0.3  # share of items released after day 1 (with days)
    pop_drift: float = 0.3  # std of each item's daily log-popularity random walk (with days)
    cache_dir: str = ""  # where the generated arrays are cached ($CTRBENCH_CACHE, ~/.cache/ctrbench)


def _validate(c: SyntheticConfig) -> None:
    def bad(name: str, allowed: str) -> ValueError:
        return ValueError(f"dataset.{name}={getattr(c, name)!r} is invalid: must be {allowed}")

    for name in ("n_users", "n_items", "n_cats", "n_segments", "n_ctx", "n_interests", "max_len"):
        if getattr(c, name) < 1:
            raise bad(name, "an integer >= 1")
    if c.n_cats > c.n_items:
        raise bad("n_cats", f"<= n_items ({c.n_items}) so that every category has an item")
    if c.n_interests > c.n_cats:
        raise bad("n_interests", f"<= n_cats ({c.n_cats})")
    if c.n_items < 2:
        raise bad("n_items", "an integer >= 2 (negative behaviours must differ from real ones)")
    if c.min_seq_len < 2:
        raise bad("min_seq_len", "an integer >= 2 (a row needs one behaviour of history and a target)")
    if c.max_seq_len < c.min_seq_len:
        raise bad("max_seq_len", f"an integer >= min_seq_len ({c.min_seq_len})")
    if c.negatives < 0:
        raise bad("negatives", "an integer >= 0")
    for name in ("cat_alpha", "item_alpha", "item_std", "user_std", "seg_std", "ctx_std"):
        if not getattr(c, name) >= 0:
            raise bad(name, "a number >= 0")
    for name in ("switch_prob", "noise"):
        if not 0 <= getattr(c, name) <= 1:
            raise bad(name, "a probability in [0, 1]")
    if not 0 < c.recency_decay <= 1:
        raise bad("recency_decay", "in (0, 1]")
    if not 0 < c.pos_rate < 1:
        raise bad("pos_rate", "in (0, 1)")
    for name in ("w_hist", "w_interest", "w_pop"):
        if not np.isfinite(getattr(c, name)):
            raise bad(name, "a finite number")
    if c.split not in SPLIT_MODES:
        raise bad("split", f"one of {', '.join(SPLIT_MODES)}")
    for name in ("val_frac", "test_frac"):
        if not 0 < getattr(c, name) < 1:
            raise bad(name, "in (0, 1)")
    if c.val_frac + c.test_frac >= 1:
        raise bad("test_frac", f"< 1 - val_frac ({1 - c.val_frac:g}) so that training rows remain")
    if c.split == "user" and c.n_users < 3:
        raise bad("n_users", "an integer >= 3 with split=user (one user per split at least)")
    if c.n_days < 2:
        raise bad("n_days", "an integer >= 2 (a day to train on and the day after to evaluate on)")
    if not 0 <= c.new_item_frac < 1:
        raise bad("new_item_frac", "in [0, 1)")
    if not (np.isfinite(c.pop_drift) and c.pop_drift >= 0):
        raise bad("pop_drift", "a number >= 0")
    if c.days is not None:
        days = list(c.days)
        if len(days) != 2 or not all(isinstance(d, int) and not isinstance(d, bool) for d in days):
            raise bad("days", "[first, last], two whole days, e.g. [1,5]")
        if not 1 <= days[0] <= days[1] < c.n_days:
            raise bad(
                "days",
                f"[first, last] with 1 <= first <= last < n_days ({c.n_days}), the day after last "
                "being the evaluation day",
            )
        if c.split != "time":
            raise bad("split", "time with dataset.days (train on the days, evaluate on the day after)")


class _Catalog:
    """Items laid out in category blocks; one cumulative popularity array serves both global and
    within-category sampling (a category's block is a contiguous range of it)."""

    def __init__(self, c: SyntheticConfig, rng: np.random.Generator) -> None:
        cat_w = np.arange(1, c.n_cats + 1, dtype=np.float64) ** -c.cat_alpha
        cat_p = cat_w / cat_w.sum()
        sizes = 1 + rng.multinomial(c.n_items - c.n_cats, cat_p)
        self.start = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        self.stop = self.start + sizes
        block_cat = np.repeat(np.arange(c.n_cats), sizes)
        rank = np.arange(c.n_items) - self.start[block_cat]
        w = (rank + 1.0) ** -c.item_alpha
        w *= (cat_p / np.add.reduceat(w, self.start))[block_cat]
        self.weight = w  # popularity by block index
        self.cum, self.cum_lo, self.cum_hi = _cumulative(w, self.start, self.stop)
        self.cat_cum = np.cumsum(cat_p)
        self.cat_cum /= self.cat_cum[-1]
        # Shuffled ids: block index → item id (1-based), block category → category id (1-based).
        self.item_id = rng.permutation(c.n_items) + 1
        self.cat_id = rng.permutation(c.n_cats) + 1
        self.item_cat = np.zeros(c.n_items + 1, dtype=np.int64)
        self.item_cat[self.item_id] = self.cat_id[block_cat]
        self.log_pop = np.zeros(c.n_items + 1)
        self.log_pop[self.item_id] = np.log(w)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` item ids drawn by global popularity."""
        idx = np.searchsorted(self.cum, rng.random(n), side="right")
        return self.item_id[np.minimum(idx, len(self.cum) - 1)]

    def sample_cats(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` category blocks (0-based) drawn by category popularity."""
        idx = np.searchsorted(self.cat_cum, rng.random(n), side="right")
        return np.minimum(idx, len(self.cat_cum) - 1)

    def sample_in(self, rng: np.random.Generator, block_cats: np.ndarray) -> np.ndarray:
        """One item id per entry, drawn by popularity inside the given category blocks (0-based)."""
        lo, hi = self.cum_lo[block_cats], self.cum_hi[block_cats]
        idx = np.searchsorted(self.cum, lo + rng.random(len(block_cats)) * (hi - lo), side="right")
        idx = np.clip(idx, self.start[block_cats], self.stop[block_cats] - 1)
        return self.item_id[idx]


def _cumulative(w: np.ndarray, start: np.ndarray, stop: np.ndarray) -> tuple[np.ndarray, ...]:
    """Normalised cumulative popularity and its value before/at the end of every category block."""
    cum = np.cumsum(w)
    cum /= cum[-1]
    return cum, np.concatenate([[0.0], cum])[start], cum[stop - 1]


class _Timeline:
    """Item releases and drifting popularity per day (module docstring), from its own generators so
    that the draws of the plain data do not move."""

    def __init__(self, c: SyntheticConfig, cat: _Catalog) -> None:
        g = np.random.default_rng([c.seed, 2])
        self.cat, self.n_days, self.seed = cat, c.n_days, c.seed
        n = len(cat.weight)
        late = g.random(n) < c.new_item_frac
        late[cat.start] = False  # a category's most popular item exists from day 1: no block is empty
        self.release = np.ones(n, dtype=np.int64)  # by block index
        self.release[late] = g.integers(2, c.n_days + 1, size=int(late.sum()))
        walk = np.cumsum(g.normal(0.0, c.pop_drift, size=(c.n_days, n)), axis=0)
        walk -= walk[0]  # day 1 has the base popularity
        self.days = []  # per day: (cum, cum_lo, cum_hi); weights 0 before an item's release
        self.log_pop = np.zeros((c.n_days + 1, n + 1))  # [day, item id]
        for d in range(1, c.n_days + 1):
            w = cat.weight * np.exp(walk[d - 1]) * (self.release <= d)
            self.days.append(_cumulative(w, cat.start, cat.stop))
            with np.errstate(divide="ignore"):
                self.log_pop[d, cat.item_id] = np.log(w)
        self.item_release = np.zeros(n + 1, dtype=np.int64)  # by item id
        self.item_release[cat.item_id] = self.release

    def behaviour_days(self, owner: np.ndarray) -> np.ndarray:
        """Day (1..n_days) of every behaviour: sorted uniform times per user (owner is sorted)."""
        t = np.random.default_rng([self.seed, 3]).random(len(owner)) * self.n_days
        t = t[np.lexsort((t, owner))]
        return np.minimum(t.astype(np.int64) + 1, self.n_days)

    def sample(self, rng: np.random.Generator, days: np.ndarray) -> np.ndarray:
        """One item id per entry, drawn by the popularity of its day."""
        out = np.empty(len(days), dtype=np.int64)
        u = rng.random(len(days))
        for d in np.unique(days):
            at = np.flatnonzero(days == d)
            cum = self.days[d - 1][0]
            idx = np.minimum(np.searchsorted(cum, u[at], side="right"), len(cum) - 1)
            out[at] = self.cat.item_id[self._released(idx, d)]
        return out

    def sample_in(self, rng: np.random.Generator, block_cats: np.ndarray, days: np.ndarray) -> np.ndarray:
        """One item id per entry, drawn by its day's popularity inside the given category blocks."""
        out = np.empty(len(days), dtype=np.int64)
        u = rng.random(len(days))
        start, stop = self.cat.start, self.cat.stop
        for d in np.unique(days):
            at = np.flatnonzero(days == d)
            cum, cum_lo, cum_hi = self.days[d - 1]
            b = block_cats[at]
            lo, hi = cum_lo[b], cum_hi[b]
            idx = np.clip(np.searchsorted(cum, lo + u[at] * (hi - lo), side="right"), start[b], stop[b] - 1)
            out[at] = self.cat.item_id[self._released(idx, d)]
        return out

    def _released(self, idx: np.ndarray, day: int) -> np.ndarray:
        """Block indices, an item not released on ``day`` (a rounding edge of the clip) replaced by its
        category's most popular item, which exists from day 1."""
        late = self.release[idx] > day
        if late.any():
            idx = idx.copy()
            idx[late] = self.cat.start[np.searchsorted(self.cat.start, idx[late], side="right") - 1]
        return idx


def _distinct_interests(rng: np.random.Generator, cat: _Catalog, n_users: int, k: int) -> np.ndarray:
    """(n_users, k) distinct category blocks per user, drawn by popularity (duplicates redrawn)."""
    n_cats = len(cat.cat_cum)
    out = cat.sample_cats(rng, n_users * k).reshape(n_users, k)
    dup_rows = np.arange(n_users)
    # Redraw users with duplicates; if popularity is too concentrated, fall back to uniform draws.
    for attempt in range(200):
        srt = np.sort(out[dup_rows], axis=1)
        dup_rows = dup_rows[(srt[:, 1:] == srt[:, :-1]).any(axis=1)]
        if not len(dup_rows):
            return out
        n = len(dup_rows) * k
        draw = cat.sample_cats(rng, n) if attempt < 20 else rng.integers(0, n_cats, size=n)
        out[dup_rows] = draw.reshape(-1, k)
    for r in dup_rows:  # only when k is close to n_cats
        out[r] = rng.choice(n_cats, size=k, replace=False)
    return out


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _solve_bias(s: np.ndarray, target: float) -> float:
    lo, hi = -30.0 - s.max(), 30.0 - s.min()
    for _ in range(45):
        mid = 0.5 * (lo + hi)
        if _sigmoid(s + mid).mean() < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


TABLE_COLUMNS = {  # table → the row columns and sequence columns holding its ids
    "user": (("user",), ()),
    "user_seg": (("user_seg",), ()),
    "item": (("item",), ("hist_item", "neg_hist_item")),
    "cat": (("cat",), ("hist_cat", "neg_hist_cat")),
    "ctx": (("ctx",), ()),
}


def _renumber(splits: list[Split], sequences: Sequences) -> dict[str, np.ndarray]:
    """Renumber every table's ids in place to 1..n in raw id order, over the ids the arrays use;
    returns the vocabularies (row i → raw id as a string, row 0 = "")."""
    vocabularies = {}
    for table, (row_cols, seq_cols) in TABLE_COLUMNS.items():
        used = [s.columns[k] for s in splits for k in row_cols] + [sequences.columns[k] for k in seq_cols]
        raw = np.unique(np.concatenate(used))
        raw = raw[raw != 0]
        row = np.zeros(int(raw.max()) + 1, dtype=np.int64)
        row[raw] = np.arange(1, len(raw) + 1)
        for s in splits:
            for k in row_cols:
                s.columns[k] = row[s.columns[k]]
        for k in seq_cols:
            sequences.columns[k] = row[sequences.columns[k]]
        width = len(str(int(raw.max())))
        vocabularies[table] = np.concatenate([np.array([""], dtype=f"U{width}"), raw.astype(f"U{width}")])
    return vocabularies


def _row_item_cat(item_cat: np.ndarray, vocabularies: dict[str, np.ndarray]) -> np.ndarray:
    """Item row → category row, for renumbered tables."""
    items = vocabularies["item"][1:].astype(np.int64)
    cat_row = np.zeros(len(item_cat) and int(item_cat.max()) + 1, dtype=np.int64)
    cat_row[vocabularies["cat"][1:].astype(np.int64)] = np.arange(1, len(vocabularies["cat"]))
    out = np.zeros(len(items) + 1, dtype=np.int64)
    out[1:] = cat_row[item_cat[items]]
    return out


class SyntheticDataset:
    """Generated multi-interest CTR data; see the module docstring for the process."""

    Config = SyntheticConfig

    def __init__(self, config: SyntheticConfig) -> None:
        _validate(config)
        self.config = config
        self.item_cat: np.ndarray | None = None  # item id → category id, filled by load()

    def schema(self, rows: dict[str, int] | None = None) -> Schema:
        """The fields; ``rows`` (table → embedding rows) for a day range, whose tables hold its ids only."""
        c = self.config
        rows = rows or {
            "user": c.n_users + 1,
            "user_seg": c.n_segments + 1,
            "item": c.n_items + 1,
            "cat": c.n_cats + 1,
            "ctx": c.n_ctx + 1,
        }
        n_item, n_cat = rows["item"], rows["cat"]
        return Schema(
            fields=(
                Field("user", "categorical", vocab=rows["user"]),
                Field("user_seg", "categorical", vocab=rows["user_seg"]),
                Field("item", "categorical", vocab=n_item),
                Field("cat", "categorical", vocab=n_cat),
                Field("ctx", "categorical", vocab=rows["ctx"]),
                Field("hist_item", "sequence", vocab=n_item, table="item", length="hist_len"),
                Field("hist_cat", "sequence", vocab=n_cat, table="cat", length="hist_len"),
                Field(
                    "neg_hist_item",
                    "sequence",
                    vocab=n_item,
                    table="item",
                    length="hist_len",
                    negative_of="hist_item",
                ),
                Field(
                    "neg_hist_cat",
                    "sequence",
                    vocab=n_cat,
                    table="cat",
                    length="hist_len",
                    negative_of="hist_cat",
                ),
            ),
            group="user",
            label="label",
            max_len=c.max_len,
        )

    def load(self) -> DatasetSplits:
        """The generated arrays, cached like a real dataset's (keyed by the options, this module's
        source and numpy's version), so that every process of a sweep maps one shared copy."""
        options = {**protocol_options(self.config), "numpy": np.__version__}
        cache = ArrayCache("synthetic", FORMAT_VERSION, self.config.cache_dir, optional=True)
        cached = cache.load_or_build([Path(__file__)], options, self.generate)
        self.item_cat = cached.extras["item_cat"]
        return cached.data

    def generate(self) -> CachedData:
        """Draw the dataset (module docstring); ``extras["item_cat"]`` maps item id → category id."""
        t0 = time.perf_counter()
        c = self.config
        rng = np.random.default_rng(c.seed)
        cat = _Catalog(c, rng)
        timeline = _Timeline(c, cat) if c.days is not None else None

        # Users: interests, weights, segment, random effects, sequence lengths.
        interests = _distinct_interests(rng, cat, c.n_users, c.n_interests)
        weights = rng.gamma(1.0, size=(c.n_users, c.n_interests))
        weights_cum = np.cumsum(weights, axis=1)
        weights_cum /= weights_cum[:, -1:]
        seg = rng.integers(1, c.n_segments + 1, size=c.n_users)
        u_seg = rng.normal(0.0, c.seg_std, size=c.n_segments + 1)
        u_user = rng.normal(0.0, c.user_std, size=c.n_users) + u_seg[seg]
        u_ctx = rng.normal(0.0, c.ctx_std, size=c.n_ctx + 1)
        lengths = rng.integers(c.min_seq_len, c.max_seq_len + 1, size=c.n_users)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        n_beh = int(offsets[-1])
        owner = np.repeat(np.arange(c.n_users), lengths)
        pos = np.arange(n_beh) - offsets[owner]
        day = timeline.behaviour_days(owner) if timeline is not None else None

        def sample(rows: np.ndarray) -> np.ndarray:
            """Items drawn by popularity (that of each behaviour's day on a timeline)."""
            return cat.sample(rng, len(rows)) if timeline is None else timeline.sample(rng, day[rows])

        # Active interest: Markov switching, forward-filled from the last redraw.
        redraw = (rng.random(n_beh) < c.switch_prob) | (pos == 0)
        slot = (weights_cum[owner] < rng.random(n_beh)[:, None]).sum(axis=1)
        last = np.maximum.accumulate(np.where(redraw, np.arange(n_beh), 0))
        active = interests[owner, slot[last]]  # category block of z_t

        # Behaviours (and one sampled negative per position, different from the real item).
        noisy = rng.random(n_beh) < c.noise
        beh_block = np.where(noisy, cat.sample_cats(rng, n_beh), active)
        if timeline is None:
            beh_item = cat.sample_in(rng, beh_block)
        else:
            beh_item = timeline.sample_in(rng, beh_block, day)
        neg_item = sample(np.arange(n_beh))
        for _ in range(100):
            same = np.flatnonzero(neg_item == beh_item)
            if not len(same):
                break
            neg_item[same] = sample(same)
        same = neg_item == beh_item
        neg_item[same] = beh_item[same] % c.n_items + 1
        beh_cat = cat.item_cat[beh_item]

        # Impressions: each target position k >= 1 shows b_k and `negatives` random items.
        tgt = np.flatnonzero(pos >= 1)
        n_cand = 1 + c.negatives
        cand = np.empty((len(tgt), n_cand), dtype=np.int64)
        cand[:, 0] = beh_item[tgt]
        cand[:, 1:] = sample(np.repeat(tgt, c.negatives)).reshape(len(tgt), c.negatives)
        cand_cat = cat.item_cat[cand]
        share = self._history_share(beh_cat, tgt, pos[tgt], cand_cat)
        match = cand_cat == cat.cat_id[active[tgt]][:, None]
        lp = cat.log_pop[cand] if timeline is None else timeline.log_pop[day[tgt][:, None], cand]
        pop = (lp - lp.mean()) / max(float(lp.std()), 1e-12)
        ctx = rng.integers(1, c.n_ctx + 1, size=cand.shape)
        score = (
            c.w_hist * share + c.w_interest * match + c.w_pop * pop + u_user[owner[tgt]][:, None] + u_ctx[ctx]
        ).ravel()
        no_item = None
        if c.item_std > 0:  # own generator: the default data stay identical
            u_item = np.random.default_rng([c.seed, 1]).normal(0.0, c.item_std, size=c.n_items + 1)
            no_item = score
            score = score + u_item[cand].ravel()
        prob = _sigmoid(score + _solve_bias(score, c.pos_rate))
        label = (rng.random(len(prob)) < prob).astype(np.float32)

        row_tgt = np.repeat(tgt, n_cand)
        row_user = owner[row_tgt]
        row_pos = pos[row_tgt]
        columns = {
            "user": (row_user + 1).astype(np.int64),
            "user_seg": seg[row_user].astype(np.int64),
            "item": cand.ravel(),
            "cat": cand_cat.ravel(),
            "ctx": ctx.ravel().astype(np.int64),
            "label": label,
        }
        if timeline is None:
            part = self._assign(rng, row_user, row_pos, lengths)
        else:
            part = self._days(day[row_tgt], row_user)
        splits = []
        for p, name in enumerate(("train", "val", "test")):
            m = part == p
            if not m.any():
                hint = {
                    "train": "lower dataset.val_frac/dataset.test_frac",
                    "val": "dataset.val_frac",
                    "test": "dataset.test_frac",
                }[name]
                raise ValueError(
                    f"dataset split {name!r} is empty: raise dataset.n_users or dataset.min_seq_len or {hint}"
                )
            splits.append(
                Split(
                    columns={k: v[m] for k, v in columns.items()},
                    seq=row_user[m].astype(np.int64),
                    end=row_pos[m].astype(np.int64),
                )
            )
        sequences = Sequences(
            offsets=offsets,
            columns={
                "hist_item": beh_item.astype(np.int64),
                "hist_cat": beh_cat.astype(np.int64),
                "neg_hist_item": neg_item.astype(np.int64),
                "neg_hist_cat": cat.item_cat[neg_item],
            },
        )
        test = part == 2
        names = ("train", "val", "test")
        vocabularies = None
        if timeline is not None:  # the range's behaviours only (up to its evaluation day), rows renumbered
            keep = day <= c.days[1] + 1
            kept = np.concatenate([[0], np.cumsum(np.add.reduceat(keep.astype(np.int64), offsets[:-1]))])
            sequences = Sequences(kept.astype(np.int64), {k: v[keep] for k, v in sequences.columns.items()})
            vocabularies = _renumber(splits, sequences)
            cat.item_cat = _row_item_cat(cat.item_cat, vocabularies)
        info: dict[str, object] = {
            "n_users": c.n_users,
            "n_items": c.n_items,
            **({} if timeline is None else self._timeline_info(timeline, vocabularies, day)),
            "n_behaviours": n_beh,
            "n_rows": {n: len(s) for n, s in zip(names, splits, strict=True)},
            "pos_rate": {n: float(s.columns["label"].mean()) for n, s in zip(names, splits, strict=True)},
            "oracle_auc": auc(label[test], prob[test]),
            **({} if no_item is None else {"oracle_auc_no_item": auc(label[test], no_item[test])}),
            "gen_seconds": round(time.perf_counter() - t0, 3),
        }
        rows = None if vocabularies is None else {t: len(v) for t, v in vocabularies.items()}
        data = DatasetSplits(
            self.schema(rows), *splits, sequences=sequences, info=info, vocabularies=vocabularies
        )
        return CachedData(data, {"item_cat": cat.item_cat})

    def _days(self, row_day: np.ndarray, row_user: np.ndarray) -> np.ndarray:
        """Split index per row of a timeline: 0 for the days ``first..last``, 1/2 (val/test, by user) for
        the day after, -1 for any other day."""
        c = self.config
        first, last = c.days
        val_user = np.random.default_rng([c.seed, 4]).random(c.n_users) < c.val_frac / (
            c.val_frac + c.test_frac
        )
        evaluation = np.where(val_user[row_user], 1, 2)
        in_range = (row_day >= first) & (row_day <= last)
        return np.where(in_range, 0, np.where(row_day == last + 1, evaluation, -1)).astype(np.int8)

    def _timeline_info(
        self, timeline: _Timeline, vocabularies: dict[str, np.ndarray], day: np.ndarray
    ) -> dict:
        first, last = self.config.days
        release = timeline.item_release[1:]
        return {
            "days": [first, last],
            "eval_day": last + 1,
            "items_released": int((release <= last + 1).sum()),
            # released during the range or on its evaluation day (unknown to a model of earlier days)
            "items_new": int(((release >= max(first, 2)) & (release <= last + 1)).sum()),
            "rows": {t: len(v) for t, v in vocabularies.items()},
            "behaviours_per_day": np.bincount(day, minlength=timeline.n_days + 1)[1:].tolist(),
        }

    def _history_share(
        self, beh_cat: np.ndarray, tgt: np.ndarray, k: np.ndarray, cand_cat: np.ndarray
    ) -> np.ndarray:
        """Recency-weighted share A of the last min(k, max_len) behaviours in each candidate's category."""
        c = self.config
        width = int(min(c.max_len, c.max_seq_len - 1))
        decay = c.recency_decay ** np.arange(width)
        out = np.empty(cand_cat.shape)
        for a in range(0, len(tgt), _CHUNK):
            t, kk, cc = tgt[a : a + _CHUNK], k[a : a + _CHUNK], cand_cat[a : a + _CHUNK]
            d = np.arange(width)
            valid = d[None, :] < kk[:, None]
            hist = np.where(valid, beh_cat[np.maximum(t[:, None] - 1 - d[None, :], 0)], -1)
            w = valid * decay[None, :]
            hit = (hist[:, None, :] == cc[:, :, None]).astype(np.float64)  # (chunk, n_cand, width)
            out[a : a + _CHUNK] = (hit @ w[:, :, None])[..., 0] / w.sum(axis=1)[:, None]
        return out

    def _assign(
        self, rng: np.random.Generator, row_user: np.ndarray, row_pos: np.ndarray, lengths: np.ndarray
    ) -> np.ndarray:
        """Split index per row: 0 train, 1 val, 2 test."""
        c = self.config
        if c.split == "user":
            n_test = max(1, int(np.floor(c.n_users * c.test_frac + 0.5)))
            n_val = max(1, int(np.floor(c.n_users * c.val_frac + 0.5)))
            n_val = min(n_val, c.n_users - n_test - 1)
            order = rng.permutation(c.n_users)
            user_part = np.zeros(c.n_users, dtype=np.int8)
            user_part[order[:n_test]] = 2
            user_part[order[n_test : n_test + n_val]] = 1
            return user_part[row_user]
        # time: per user, the latest target positions go to test, the ones before them to val; the
        # per-user counts are randomly rounded so that short sequences still feed val/test in expectation.
        n_tgt = lengths - 1
        n_test = np.floor(n_tgt * c.test_frac + rng.random(c.n_users)).astype(np.int64)
        n_val = np.floor(n_tgt * c.val_frac + rng.random(c.n_users)).astype(np.int64)
        rank = row_pos - 1  # 0 .. n_tgt-1 in time order
        from_end = n_tgt[row_user] - rank
        return np.where(
            from_end <= n_test[row_user], 2, np.where(from_end <= (n_test + n_val)[row_user], 1, 0)
        ).astype(np.int8)
