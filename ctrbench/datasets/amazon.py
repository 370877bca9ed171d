"""``dataset=amazon``: Amazon product reviews (McAuley et al. 2014/2015) under the DIN or DIEN protocol.

Raw files in ``dataset.root`` under their original names (downloaded from snap.stanford.edu into
the cache when ``root`` is empty): ``reviews_<category>_5.json.gz`` — one JSON object per line
(reviewerID, asin, unixReviewTime, ...) — and ``meta_<category>.json.gz`` — one *Python literal*
dict per line (single quotes), parsed with ``ast.literal_eval``, never ``eval``. Both are
streamed; only the meta lines of reviewed items are parsed. Uncompressed ``.json`` files work too.
A review line must be exactly one JSON object (parsed in full: trailing text is refused) with string
``reviewerID`` and ``asin`` and an integer ``unixReviewTime``; a line that is not is reported with
its file and line number.

``protocol=din`` (DIN paper §6.1; official repo ``utils/1_convert_pd.py``, ``2_remap_id.py``,
``din/build_dataset.py``)
  Reviews of items without meta are dropped (``missing_meta=auto``); category =
  ``categories[-1][-1]``; per user, reviews ordered by time (ties in file order) are p0..p(n−1)
  and each position gets one negative uniform over the items the user never reviewed (seeded).
  Prefix k = 1..n−2 gives a training pair (history p0..p(k−1); one positive row with p_k, one
  negative row), k = n−1 the test pair. Train rows = 2·(reviews − 2·users). Validation (not in
  the original): for a ``val_frac`` share of the users with n ≥ 3, the last training pair
  (k = n−2) moves to ``val`` — so train + val rows keep the formula; ``val_frac=0`` gives an empty
  validation split and the original training set. The user id is not a feature.

``protocol=dien`` (DIEN paper §5.1; official ``script/process_data.py``, ``local_aggretor.py``,
``split_by_user.py``)
  Items without meta get category ``default_cat``; category = ``categories[0][-1]``; each
  review gets one negative drawn ∝ item popularity (its share of all reviews), never the same
  item; only each user's last review is used: a negative row then a positive row, history = the
  user's earlier reviews in time order. Users are split ``test_frac`` = 10 % to test (seeded,
  exact count); ``val_frac`` of the remaining users form the validation split (not in the
  original). The user id is a feature (``uid``) whose held-out users map to 0, as DIEN's vocabulary
  is built from the training file. The statistics show this split as ``dien_user_split``:
  training + validation users and rows (DIEN's training file) against test users and rows.

Both: users with fewer than 2 reviews are dropped and counted; ``max_len`` (default 100, DIEN's
training cap; 0 = no cap) caps every split's history — the official DIEN caps training histories
only. ``aux_negatives`` adds DIEN's auxiliary-loss negatives (``neg_hist_item``/``neg_hist_cat``):
per history position one item ∝ popularity, not the clicked one, re-drawn before every epoch.
Rows carry the GAUC group column ``user``.
"""

from __future__ import annotations

import ast
import json
import re
from array import array
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ctrbench.datasets.cache import ArrayCache, CachedData, protocol_options
from ctrbench.datasets.download import RemoteFile, fetch, raw_folder
from ctrbench.datasets.rawfiles import DatasetError, malformed, numbered_lines, require_files
from ctrbench.datasets.sequences import (
    TEST,
    TRAIN,
    VAL,
    AuxNegatives,
    PopularitySampler,
    UserSequences,
    behaviour_schema,
    group_by_user,
    make_split,
    remap,
    sequence_columns,
    split_stats,
    split_users,
    uid_feature,
    uniform_unseen,
)
from ctrbench.schema import DatasetSplits, Sequences, Split

AMAZON_URL = "http://snap.stanford.edu/data/amazon/productGraph/categoryFiles/"
PROTOCOLS = ("din", "dien")
MISSING_META = ("auto", "drop", "default")
DEFAULT_CATEGORY = "default_cat"
FORMAT_VERSION = 2  # 2: the DIEN user split in the statistics, review lines parsed in full


@dataclass
class AmazonConfig:
    root: str = ""  # folder with reviews_<category>_5.json.gz and meta_<category>.json.gz; "" = download
    category: str = "Electronics"  # Electronics, Books, or any category of the 2014 files
    protocol: str = "din"  # din | dien (see the module docstring)
    max_len: int = 100  # history cap for every split (DIEN's training maxlen); 0 = no cap
    val_frac: float = 0.1  # din: users whose last training pair is validation; dien: held-out train users
    test_frac: float = 0.1  # dien: share of users in test (DIEN: 10 %); din: unused (test = last pair)
    missing_meta: str = "auto"  # items without meta: drop | default (category default_cat) | auto
    aux_negatives: bool = True  # neg_hist_item / neg_hist_cat for DIEN's auxiliary loss
    seed: int = 1234  # negatives and splits (1234 is build_dataset.py's random.seed)
    cache_dir: str = ""  # "" = $CTRBENCH_CACHE or ~/.cache/ctrbench
    url: str = AMAZON_URL  # where the raw files are downloaded from when root is empty


def review_names(category: str) -> tuple[str, str]:
    return f"reviews_{category}_5.json.gz", f"reviews_{category}_5.json"


def meta_names(category: str) -> tuple[str, str]:
    return f"meta_{category}.json.gz", f"meta_{category}.json"


@dataclass
class Reviews:
    """Parsed reviews: per review the user code, item code (0-based) and time, plus the item keys."""

    user: np.ndarray
    item: np.ndarray
    time: np.ndarray
    item_keys: list[bytes]


# Meta fast path: the asin and the categories value by pattern from a line that is one {...} dict;
# a line where either is missing or unusual goes through the full ast.literal_eval, which reports it.
_STR = rb"'(?:[^'\\\n]|\\.)*'|\"(?:[^\"\\\n]|\\.)*\""
_PATH = rb"\[\s*(?:(?:" + _STR + rb")\s*,?\s*)*\]"
_CATEGORIES = re.compile(rb"""'categories': (\[\s*(?:""" + _PATH + rb"""\s*,?\s*)*\])""")
_ASIN = re.compile(rb"""'asin': '([^'\\]*)'""")


_SCAN = json.JSONDecoder().scan_once  # the C scanner behind json.loads, without its wrappers


def _review_fields(path: Path, line_no: int, line: bytes) -> tuple[str, str, int]:
    """(reviewerID, asin, unixReviewTime) of one review line, which must be exactly one JSON object.

    Every line is parsed in full by the C JSON scanner and must end where the object ends, so that
    trailing text, a cut string or a bad escape anywhere in the line is reported with its line
    number. Picking the three fields out by pattern read ~30 % more lines per second but accepted
    such lines. A line the scanner refuses is parsed again by ``json.loads`` for its error message.
    """
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise malformed(path, line_no, f"not UTF-8: byte {exc.start + 1}", line) from exc
    try:
        rec, end = _SCAN(text, 0)
        if end != len(text) and not text[end:].isspace():
            raise ValueError("extra data")
    except (StopIteration, ValueError):  # JSONDecodeError is a ValueError
        try:
            rec = json.loads(text)  # the standard message (or leading blanks, which it allows)
        except json.JSONDecodeError as exc:
            raise malformed(path, line_no, f"not JSON: {exc.msg} at column {exc.colno}", line) from exc
    if type(rec) is not dict:
        raise malformed(path, line_no, f"not a JSON object but a {type(rec).__name__}", line)
    try:
        u, i, t = rec["reviewerID"], rec["asin"], rec["unixReviewTime"]
    except KeyError as exc:
        raise malformed(path, line_no, f"no field {exc}", line) from exc
    if type(u) is not str or type(i) is not str:
        raise malformed(path, line_no, "reviewerID and asin must be strings", line)
    if type(t) is not int or not -(2**63) <= t < 2**63:
        raise malformed(path, line_no, f"unixReviewTime is {t!r}, not a whole number of seconds", line)
    return u, i, t


def read_reviews(path: Path) -> Reviews:
    """Stream ``reviews_*.json.gz``: one JSON object per line; reviewerID, asin and time are kept."""
    users: dict[str, int] = {}
    items: dict[str, int] = {}
    user, item, when = array("i"), array("i"), array("q")
    for line_no, line in numbered_lines(path):
        u, i, t = _review_fields(path, line_no, line)
        user.append(users.setdefault(u, len(users)))
        item.append(items.setdefault(i, len(items)))
        when.append(t)
    if not user:
        raise DatasetError(f"{path} holds no reviews")
    return Reviews(
        np.frombuffer(user, dtype=np.int32).astype(np.int64),
        np.frombuffer(item, dtype=np.int32).astype(np.int64),
        np.frombuffer(when, dtype=np.int64).copy(),
        [key.encode() for key in items],
    )


def _category(categories: object, path_index: int) -> str | None:
    """``categories[path_index][-1]`` when the meta has a non-empty category path, else None."""
    try:
        value = categories[path_index][-1]  # type: ignore[index]
    except (TypeError, IndexError, KeyError):
        return None
    return value if isinstance(value, str) else None


def _meta_fields(path: Path, line_no: int, line: bytes) -> tuple[bytes, object]:
    """(asin, categories) of one meta line; the full ``ast.literal_eval`` when the fast path fails."""
    body = line.strip()
    if body[:1] == b"{" and body[-1:] == b"}":
        asin, cats = _ASIN.search(body), _CATEGORIES.search(body)
        if asin is not None and cats is not None:
            try:
                return asin.group(1), ast.literal_eval(cats.group(1).decode("utf-8"))
            except (ValueError, SyntaxError, UnicodeDecodeError):
                pass  # reported by the full parse below
    try:
        rec = ast.literal_eval(body.decode("utf-8"))
    except (ValueError, SyntaxError, UnicodeDecodeError, MemoryError, RecursionError) as exc:
        problem = getattr(exc, "msg", None) or type(exc).__name__
        raise malformed(path, line_no, f"not a Python literal: {problem}", line) from exc
    if not isinstance(rec, dict) or not isinstance(rec.get("asin"), str):
        raise malformed(path, line_no, "not a dict with an 'asin'", line)
    return rec["asin"].encode(), rec.get("categories")


def read_meta(path: Path, items: list[bytes], path_index: int) -> tuple[list[str | None], list[bool]]:
    """Stream ``meta_*.json.gz`` (Python literals): category and has-meta flag per reviewed item.

    Lines of items nobody reviewed are skipped after reading their asin; for the others only the
    ``categories`` value is evaluated (``ast.literal_eval``), or the whole line when it does not
    have the usual shape — a line that is no Python literal is reported with its number.
    """
    wanted = {key: code for code, key in enumerate(items)}
    category: list[str | None] = [None] * len(items)
    has_meta = [False] * len(items)
    for line_no, line in numbered_lines(path):
        found = _ASIN.search(line)
        if found is not None and found.group(1) not in wanted:
            continue
        asin, categories = _meta_fields(path, line_no, line)
        code = wanted.get(asin)
        if code is None or has_meta[code]:
            continue
        has_meta[code] = True
        category[code] = _category(categories, path_index)
    return category, has_meta


def _validate(c: AmazonConfig) -> None:
    def bad(name: str, allowed: str) -> DatasetError:
        return DatasetError(f"dataset.{name}={getattr(c, name)!r} is invalid: must be {allowed}")

    if c.protocol not in PROTOCOLS:
        raise bad("protocol", " or ".join(PROTOCOLS))
    if c.missing_meta not in MISSING_META:
        raise bad("missing_meta", " or ".join(MISSING_META))
    if not c.category or "/" in c.category or "\\" in c.category:
        raise bad("category", "a category name such as Electronics or Books")
    if c.max_len < 0:
        raise bad("max_len", "an integer >= 0 (0 = no cap)")
    if not 0 <= c.val_frac < 1:
        raise bad("val_frac", "in [0, 1)")
    if not 0 < c.test_frac < 1:
        raise bad("test_frac", "in (0, 1)")


class AmazonDataset:
    """Amazon reviews under the DIN or DIEN protocol; see the module docstring."""

    Config = AmazonConfig

    def __init__(self, config: AmazonConfig) -> None:
        _validate(config)
        self.config = config

    # ---- raw files -----------------------------------------------------------------------------
    def raw_files(self) -> tuple[Path, Path]:
        """(reviews, meta) in ``root``, downloaded into the cache first when ``root`` is empty."""
        c = self.config
        reviews, meta = review_names(c.category), meta_names(c.category)
        if c.root:
            root = Path(c.root).expanduser()
        else:
            root = raw_folder("amazon", c.cache_dir)
            base = c.url if c.url.endswith("/") else c.url + "/"
            for names in (reviews, meta):
                if not any((root / n).is_file() for n in names):
                    fetch(RemoteFile(names[0], base + names[0]), root)
        found = require_files(root, {"reviews": reviews, "meta": meta})
        return found["reviews"], found["meta"]

    def load(self) -> DatasetSplits:
        reviews, meta = self.raw_files()
        cache = ArrayCache("amazon", FORMAT_VERSION, self.config.cache_dir)
        unused = ("test_frac",) if self.config.protocol == "din" else ()
        options = protocol_options(self.config, ignore=("url", *unused))
        cached = cache.load_or_build([reviews, meta], options, lambda: self.build(reviews, meta))
        return self._attach(cached)

    # ---- protocol ------------------------------------------------------------------------------
    def build(self, reviews_path: Path, meta_path: Path) -> CachedData:
        c = self.config
        rng = np.random.default_rng(c.seed)
        raw = read_reviews(reviews_path)
        category, has_meta = read_meta(meta_path, raw.item_keys, -1 if c.protocol == "din" else 0)
        n_read = len(raw.user)
        mode = c.missing_meta if c.missing_meta != "auto" else ("drop" if c.protocol == "din" else "default")
        has = np.asarray(has_meta, dtype=bool)
        dropped: dict[str, int] = {}
        defaults = {"items_without_meta": 0, "items_without_categories": 0}
        keep = np.ones(n_read, dtype=bool)
        if mode == "drop":
            keep = has[raw.item]
            dropped["reviews_of_items_without_meta"] = int((~keep).sum())
            dropped["items_without_meta"] = int((~has).sum())
        else:
            defaults["items_without_meta"] = int((~has).sum())
        defaults["items_without_categories"] = sum(
            1 for h, k in zip(has_meta, category, strict=True) if h and k is None
        )

        # users with fewer than 2 reviews have no (history, target) pair in either protocol
        counts = np.bincount(raw.user[keep], minlength=int(raw.user.max()) + 1)
        short = keep & (counts[raw.user] < 2)
        dropped["users_with_fewer_than_2_reviews"] = int(((counts > 0) & (counts < 2)).sum())
        dropped["reviews_of_those_users"] = int(short.sum())
        keep &= ~short
        if not keep.any():
            raise DatasetError(
                f"no usable reviews in {reviews_path.name}: {n_read} read, "
                f"{dropped.get('reviews_of_items_without_meta', 0)} of items without meta in "
                f"{meta_path.name}, {dropped['reviews_of_those_users']} of users with fewer than 2 reviews"
            )

        item_id, item_codes = remap(raw.item[keep])
        cat_keys = np.array([category[code] or DEFAULT_CATEGORY for code in item_codes], dtype=object)
        cat_of_item, cats = remap(cat_keys)
        item_cat = np.r_[0, cat_of_item].astype(np.int64)
        n_items, n_cats = len(item_codes), len(cats)
        seqs = group_by_user(raw.user[keep], raw.time[keep])
        hist_item = item_id[seqs.order]
        popularity = np.bincount(hist_item, minlength=n_items + 1)
        n_users = len(seqs)
        max_len = c.max_len or int(seqs.lengths.max())

        if c.protocol == "din":
            columns, seq, end, part = self._din_rows(rng, seqs, hist_item, item_cat, n_items)
            uid_vocab = 0
        else:
            columns, seq, end, part = self._dien_rows(rng, seqs, hist_item, item_cat, popularity)
            uid_vocab = n_users + 1
        schema = behaviour_schema(
            n_items, n_cats, max_len, uid_vocab=uid_vocab, aux_negatives=c.aux_negatives
        )
        seq_columns = sequence_columns(hist_item, item_cat, c.aux_negatives)
        splits = [make_split(columns, seq, end, part == p) for p in (TRAIN, VAL, TEST)]
        for name, split in zip(("train", "test"), (splits[0], splits[2]), strict=True):
            if not len(split):
                raise DatasetError(
                    f"the {name} split is empty ({n_users} users with 2+ reviews); the input is too small"
                )
        data = DatasetSplits(schema, *splits, sequences=Sequences(seqs.offsets, seq_columns))
        extras = {"popularity": popularity, "item_cat": item_cat}
        if c.aux_negatives:
            self._aux(data, extras)(0)
        kept = int(keep.sum())
        extra: dict[str, object] = {
            "protocol": c.protocol,
            "category": c.category,
            "reviews_read": n_read,
            "reviews": kept,
            "dropped": dropped,
            "default_category": defaults,
        }
        if c.protocol == "din":
            extra["din_train_plus_val_rows"] = len(splits[0]) + len(splits[1])
            extra["din_formula_2x_reviews_minus_2x_users"] = 2 * (kept - 2 * n_users)
        else:
            extra["dien_user_split"] = self._dien_user_split(splits)
        data.info = split_stats(data, **extra)
        return CachedData(data, extras)

    def _din_rows(
        self,
        rng: np.random.Generator,
        seqs: UserSequences,
        hist_item: np.ndarray,
        item_cat: np.ndarray,
        n_items: int,
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
        """Every prefix k >= 1 of every user: (positive, negative) rows; k = n−1 is test."""
        c = self.config
        owner, pos, n = seqs.owner, seqs.position, seqs.lengths
        targets = np.flatnonzero(pos >= 1)
        negatives = uniform_unseen(rng, owner, hist_item, n_items, targets)
        target_owner, target_pos = owner[targets], pos[targets]
        last = n[target_owner] - 1
        val_user = np.zeros(len(n), dtype=bool)
        eligible = np.flatnonzero(n >= 3)
        if c.val_frac > 0 and len(eligible):
            n_val = max(1, int(round(c.val_frac * len(eligible))))
            val_user[rng.choice(eligible, size=n_val, replace=False)] = True
        target_part = np.where(
            target_pos == last, TEST, np.where(val_user[target_owner] & (target_pos == last - 1), VAL, TRAIN)
        )
        item = np.stack([hist_item[targets], negatives], axis=1).ravel()
        row_owner = np.repeat(target_owner, 2)
        columns = {
            "user": row_owner + 1,
            "item": item,
            "cat": item_cat[item],
            "label": np.tile(np.array([1.0, 0.0], dtype=np.float32), len(targets)),
        }
        return columns, row_owner, np.repeat(target_pos, 2), np.repeat(target_part, 2).astype(np.int8)

    def _dien_rows(
        self,
        rng: np.random.Generator,
        seqs: UserSequences,
        hist_item: np.ndarray,
        item_cat: np.ndarray,
        popularity: np.ndarray,
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
        """Each user's last review: (negative, positive) rows with the earlier reviews as history."""
        c = self.config
        n_users = len(seqs)
        last = seqs.offsets[1:] - 1
        negatives = PopularitySampler(popularity).draw(rng, hist_item[last])
        user_part = split_users(rng, n_users, c.test_frac, c.val_frac)
        item = np.stack([negatives, hist_item[last]], axis=1).ravel()
        row_owner = np.repeat(np.arange(n_users, dtype=np.int64), 2)
        part = user_part[row_owner]
        columns = {
            "user": row_owner + 1,
            "uid": uid_feature(row_owner + 1, part),
            "item": item,
            "cat": item_cat[item],
            "label": np.tile(np.array([0.0, 1.0], dtype=np.float32), n_users),
        }
        return columns, row_owner, np.repeat(seqs.lengths - 1, 2), part

    def _dien_user_split(self, splits: list[Split]) -> dict[str, float]:
        """DIEN's own user split (``split_by_user.py``: 90 % of the users to training, 10 % to test):
        training + validation users and rows against test users and rows; validation is carved out
        of DIEN's training side, so the first two add up to DIEN's training file."""
        train_val = np.r_[splits[TRAIN].columns["user"], splits[VAL].columns["user"]]
        n_train_val, n_test = len(np.unique(train_val)), len(np.unique(splits[TEST].columns["user"]))
        return {
            "train_plus_val_users": n_train_val,
            "train_plus_val_rows": len(train_val),
            "test_users": n_test,
            "test_rows": len(splits[TEST]),
            "test_user_share": round(n_test / max(n_train_val + n_test, 1), 4),
        }

    # ---- per-epoch randomness ------------------------------------------------------------------
    def _aux(self, data: DatasetSplits, extras: dict[str, np.ndarray]) -> AuxNegatives:
        return AuxNegatives.of(data, extras["popularity"], extras["item_cat"], self.config.seed)

    def _attach(self, cached: CachedData) -> DatasetSplits:
        data = cached.data
        if self.config.aux_negatives:
            data.resample = self._aux(data, cached.extras)
        return data
