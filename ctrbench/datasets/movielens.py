"""``dataset=movielens``: GroupLens MovieLens ratings as CTR data under the DIN paper's protocol.

DIN paper §6.1: label = rating ≥ 4 (``positive_rating``); users are split into training and test
users (the paper: 100,000 of 138,493 users, ~72 %, to training); features are the candidate movie
id and genre and the user's previously rated movie ids and genres in time order. The user id is
not a feature. Every rating is a row.

Raw files in ``dataset.root`` (or in one sub-folder of it), the layout detected by file names:

* ML-100K: ``u.data`` (user, movie, rating, time; tab-separated) and ``u.item`` (``|``-separated,
  19 genre flags, latin-1);
* ML-1M: ``ratings.dat`` and ``movies.dat`` (``::``-separated, genres ``A|B``, latin-1);
* ML-20M / ml-latest: ``ratings.csv`` and ``movies.csv`` (with headers, genres ``A|B``).

With ``root`` empty, ``version`` (ml-100k | ml-1m | ml-20m) is downloaded from files.grouplens.org
into the cache and verified against its published MD5.

Choices the paper leaves open (defaults first):

* ``genre`` — the one genre a multi-genre movie gets: ``first`` listed (ML-100K flag order, which
  is alphabetical after "unknown"), ``last``, ``random`` (seeded, per movie) or ``combo`` (the
  whole genre combination as one category). ``first`` keeps the paper's scale of categories
  (ML-20M: 20 genres; the paper reports 21 categories, padding included).
* ``history`` — ``all`` rated movies (the paper's "user rated movie_id_list") or only
  ``positive`` ones; either way only ratings with an *earlier* timestamp than the row's (ties
  excluded, since ML users often rate many movies in the same second).
* ``max_len`` = 100 most recent behaviours; ``min_history`` = 1: rows whose history is empty (a
  user's first ratings) are dropped and counted.
* ``test_frac`` = 0.278 of the users to test (the paper's 38,493 / 138,493), ``val_frac`` = 0.1
  of the remaining users to validation, ``seed`` = 0.

``aux_negatives`` adds DIEN's auxiliary-loss negatives (per history position a movie drawn ∝
popularity, re-drawn each epoch) so that DIEN runs on this dataset too. Ratings of movies missing
from the movie file get the genre ``(unknown)``, counted in the statistics.
"""

from __future__ import annotations

import csv
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np

from ctrbench.datasets.cache import ArrayCache, CachedData, protocol_options
from ctrbench.datasets.download import RemoteFile, fetch, raw_folder, unzip
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
)
from ctrbench.schema import DatasetSplits, Sequences

GENRE_CHOICES = ("first", "last", "random", "combo")
HISTORY_CHOICES = ("all", "positive")
UNKNOWN_GENRE = "(unknown)"
FORMAT_VERSION = 1
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip


@dataclass(frozen=True)
class Layout:
    """One GroupLens file layout."""

    name: str
    ratings: str
    movies: str
    sep: str  # of the ratings file
    movie_sep: str
    header: bool
    encoding: str
    rating_step: float  # ratings are multiples of this from rating_step to 5
    movie_line: str  # what a line of the movie file holds

    @property
    def ratings_allowed(self) -> str:
        if self.rating_step == 1:
            return f"{self.name} ratings are whole numbers 1..5"
        return f"{self.name} ratings are {self.rating_step:g}..5 in steps of {self.rating_step:g}"

    def is_rating(self, r: np.ndarray) -> np.ndarray:
        """Which values are ratings of this layout (NaN and infinities are not)."""
        stars = r / self.rating_step
        return np.isfinite(r) & (r >= self.rating_step) & (r <= 5) & (stars == np.round(stars))


LAYOUTS = (
    Layout("ml-100k", "u.data", "u.item", "\t", "|", False, "latin-1", 1.0,
           "movie id|title|release date|video release date|IMDb URL|19 genre flags"),
    Layout("ml-1m", "ratings.dat", "movies.dat", "::", "::", False, "latin-1", 1.0, "MovieID::Title::Genres"),
    Layout("ml-20m", "ratings.csv", "movies.csv", ",", ",", True, "utf-8", 0.5,
           "movieId,title,genres after a header line"),
)  # fmt: skip
RATING_COLUMNS = ("user", "movie", "rating", "time")
GROUPLENS = "https://files.grouplens.org/datasets/movielens/"
ARCHIVES = {  # published MD5s; sizes where known (ml-1m: MD5 only)
    "ml-100k": RemoteFile(
        "ml-100k.zip", GROUPLENS + "ml-100k.zip", 4_924_029, "0e33842e24a9c977be4e0107933c0723"
    ),
    "ml-1m": RemoteFile("ml-1m.zip", GROUPLENS + "ml-1m.zip", None, "c4d9eecfca2ab87c1945afe126590906"),
    "ml-20m": RemoteFile(
        "ml-20m.zip", GROUPLENS + "ml-20m.zip", 198_702_078, "cd245b17a1ae2cc31bb14903e1204af3"
    ),
}


@dataclass
class MovieLensConfig:
    root: str = (
        ""  # folder with u.data+u.item, ratings.dat+movies.dat or ratings.csv+movies.csv; "" = download
    )
    version: str = "ml-100k"  # what to download when root is empty: ml-100k | ml-1m | ml-20m
    genre: str = "first"  # genre of a multi-genre movie: first | last | random | combo
    history: str = "all"  # behaviours: all rated movies | positive (rating >= positive_rating) only
    max_len: int = 100  # most recent behaviours kept per row
    min_history: int = 1  # rows with a shorter history are dropped (counted)
    positive_rating: float = 4.0  # label = rating >= this (DIN paper: 4 and 5 are positive)
    test_frac: float = 0.278  # users to test (DIN paper: 38,493 of 138,493)
    val_frac: float = 0.1  # of the remaining users, to validation
    aux_negatives: bool = True  # neg_hist_item / neg_hist_cat for DIEN's auxiliary loss
    seed: int = 0  # user split, random genre, negatives
    cache_dir: str = ""  # "" = $CTRBENCH_CACHE or ~/.cache/ctrbench
    url: str = ""  # download from here instead of files.grouplens.org (a mirror, file:// ...)


def detect_layout(root: Path) -> tuple[Layout, Path]:
    """The layout whose two files are in ``root``, else in exactly one of its sub-folders.

    Several candidates (``root`` holding two layouts, or several sub-folders holding one each) are
    an error listing them: picking one silently could train on a different dataset than meant.
    """
    if not root.is_dir():
        raise DatasetError(f"dataset.root={str(root)!r} is not a folder; {_expected()}")

    def found(folder: Path) -> list[tuple[Layout, Path]]:
        return [
            (x, folder) for x in LAYOUTS if (folder / x.ratings).is_file() and (folder / x.movies).is_file()
        ]

    candidates = found(root)
    if len(candidates) > 1:
        raise DatasetError(
            f"dataset.root={str(root)!r} holds the files of several MovieLens layouts "
            f"({', '.join(f'{x.ratings} + {x.movies} ({x.name})' for x, _ in candidates)}); keep one layout "
            "per folder and point dataset.root at it"
        )
    if not candidates:
        candidates = [c for sub in sorted(p for p in root.iterdir() if p.is_dir()) for c in found(sub)]
    if len(candidates) > 1:
        listed = ", ".join(f"{folder} ({x.name})" for x, folder in candidates)
        raise DatasetError(
            f"dataset.root={str(root)!r} holds several MovieLens datasets: {listed}; pick one with "
            "dataset.root=<one of them>"
        )
    if candidates:
        return candidates[0]
    present = ", ".join(sorted(p.name for p in root.iterdir())[:12]) or "nothing"
    raise DatasetError(
        f"dataset.root={str(root)!r} holds no MovieLens files ({_expected()}; found: {present})"
    )


def _expected() -> str:
    return "expected " + " or ".join(f"{x.ratings} + {x.movies} ({x.name})" for x in LAYOUTS)


def _data_lines(path: Path, layout: Layout) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of the lines numpy reads as ratings rows: after the header, not empty."""
    with open(path, encoding=layout.encoding) as f:
        for line_no, line in enumerate(f, 1):
            text = line.rstrip("\r\n")
            if text and not (line_no == 1 and layout.header):
                yield line_no, text


def _first_bad_line(path: Path, layout: Layout) -> DatasetError:
    """Locate the line numpy could not parse (its messages number rows inconsistently)."""
    for line_no, line in _data_lines(path, layout):
        parts = line.strip().split(layout.sep)
        if len(parts) != 4:
            return malformed(path, line_no, f"{len(parts)} fields, expected user, movie, rating, time", line)
        try:
            [float(p) for p in parts]
        except ValueError:
            return malformed(path, line_no, "a field is not a number", line)
    return DatasetError(f"{path} could not be read as ratings (user, movie, rating, time)")


def _check_values(path: Path, layout: Layout, table: np.ndarray) -> None:
    """Refuse what numpy reads but the protocol cannot use: a NaN or infinite field, a fractional
    id or time, a rating outside the layout's scale (its label would be silently 0 or 1)."""
    ok = np.isfinite(table) & (table == np.round(table))
    ok[:, 2] = layout.is_rating(table[:, 2])
    bad = np.flatnonzero(~ok.all(axis=1))
    if not len(bad):
        return
    row = int(bad[0])
    column = int(np.flatnonzero(~ok[row])[0])
    found = next(islice(_data_lines(path, layout), row, None), None)
    fields = found[1].strip().split(layout.sep) if found else []
    value = fields[column].strip() if len(fields) == 4 else str(table[row, column])
    where = f"{path}:{found[0]}" if found else f"{path}, ratings row {row + 1}"
    allowed = (
        layout.ratings_allowed if column == 2 else f"the {RATING_COLUMNS[column]} must be a whole number"
    )
    raise DatasetError(
        f"{where}: column {column + 1} ({RATING_COLUMNS[column]}) has {value!r}; {allowed} "
        f"({len(bad)} rows with such values)"
    )


def read_ratings(path: Path, layout: Layout) -> np.ndarray:
    """(n, 4) float64: user, movie, rating, time — every value checked (:func:`_check_values`)."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*input contained no data.*")
            if len(layout.sep) == 1:
                table = np.loadtxt(
                    path,
                    delimiter=layout.sep,
                    skiprows=int(layout.header),
                    ndmin=2,
                    encoding=layout.encoding,
                    comments=None,
                )
            else:
                with open(path, encoding=layout.encoding) as f:
                    lines = (line.replace(layout.sep, "\t") for line in f)
                    table = np.loadtxt(lines, delimiter="\t", ndmin=2, comments=None)
    except ValueError as exc:
        raise _first_bad_line(path, layout) from exc
    if table.shape[0] == 0:
        raise DatasetError(f"{path} holds no ratings")
    if table.shape[1] != 4:
        raise _first_bad_line(path, layout)
    _check_values(path, layout, table)
    return table


def read_genres(path: Path, layout: Layout) -> dict[int, list[str]]:
    """Movie id → its genres in the file's order."""
    out: dict[int, list[str]] = {}
    with open(path, encoding=layout.encoding, newline="") as f:
        if layout.name == "ml-20m":
            rows = csv.reader(f)
            next(rows, None)
            lines = ((rows.line_num, row, ",".join(row)) for row in rows)
        else:
            lines = ((n, line.rstrip("\r\n").split(layout.movie_sep), line) for n, line in enumerate(f, 1))
        for line_no, parts, line in lines:
            if not "".join(parts).strip():
                continue
            try:
                movie = int(parts[0])
                if layout.name == "ml-100k":
                    flags = parts[5:24]
                    if len(flags) != 19:
                        raise ValueError(f"{len(flags)} genre flags, expected 19")
                    genres = [g for g, flag in zip(ML100K_GENRES, flags, strict=True) if flag.strip() == "1"]
                else:
                    genres = [g for g in parts[2].split("|") if g]
            except (ValueError, IndexError) as exc:
                raise malformed(path, line_no, str(exc) or "missing fields", line) from exc
            out[movie] = genres
    if not out:
        raise DatasetError(
            f"{path} holds no movies (expected one line per movie: {layout.movie_line}); every rating "
            "would get the genre (unknown)"
        )
    return out


def _pick(genres: list[str], choice: str, rng: np.random.Generator) -> str:
    if not genres:
        return UNKNOWN_GENRE
    if choice == "first":
        return genres[0]
    if choice == "last":
        return genres[-1]
    if choice == "random":
        return genres[int(rng.integers(len(genres)))]
    return "|".join(genres)


def _validate(c: MovieLensConfig) -> None:
    def bad(name: str, allowed: str) -> DatasetError:
        return DatasetError(f"dataset.{name}={getattr(c, name)!r} is invalid: must be {allowed}")

    if c.genre not in GENRE_CHOICES:
        raise bad("genre", " | ".join(GENRE_CHOICES))
    if c.history not in HISTORY_CHOICES:
        raise bad("history", " | ".join(HISTORY_CHOICES))
    if c.version not in ARCHIVES:
        raise bad("version", " | ".join(ARCHIVES))
    if c.max_len < 1:
        raise bad("max_len", "an integer >= 1")
    if c.min_history < 0:
        raise bad("min_history", "an integer >= 0")
    if not 0 < c.test_frac < 1:
        raise bad("test_frac", "in (0, 1)")
    if not 0 <= c.val_frac < 1:
        raise bad("val_frac", "in [0, 1)")


class MovieLensDataset:
    """MovieLens ratings under the DIN paper's protocol; see the module docstring."""

    Config = MovieLensConfig

    def __init__(self, config: MovieLensConfig) -> None:
        _validate(config)
        self.config = config

    def raw_files(self) -> tuple[Layout, Path, Path]:
        """(layout, ratings file, movies file), downloading ``version`` first when root is empty."""
        c = self.config
        if c.root:
            root = Path(c.root).expanduser()
        else:
            root = raw_folder("movielens", c.cache_dir)
            remote = ARCHIVES[c.version]
            if c.url:
                remote = RemoteFile(remote.name, c.url, remote.size, remote.md5)
            if not (root / c.version).is_dir():
                unzip(fetch(remote, root), root)
            root = root / c.version
        layout, folder = detect_layout(root)
        return layout, folder / layout.ratings, folder / layout.movies

    def load(self) -> DatasetSplits:
        layout, ratings, movies = self.raw_files()
        cache = ArrayCache("movielens", FORMAT_VERSION, self.config.cache_dir)
        options = protocol_options(self.config, ignore=("url", "version"))
        cached = cache.load_or_build([ratings, movies], options, lambda: self.build(layout, ratings, movies))
        data = cached.data
        if self.config.aux_negatives:
            data.resample = self._aux(data, cached.extras)
        return data

    def build(self, layout: Layout, ratings_path: Path, movies_path: Path) -> CachedData:
        c = self.config
        rng = np.random.default_rng(c.seed)
        table = read_ratings(ratings_path, layout)
        genres = read_genres(movies_path, layout)
        user_raw, movie_raw = table[:, 0].astype(np.int64), table[:, 1].astype(np.int64)
        label = (table[:, 2] >= c.positive_rating).astype(np.float32)
        time = table[:, 3].astype(np.int64)

        item_id, movie_keys = remap(movie_raw)
        picked = [_pick(genres.get(int(m), []), c.genre, rng) for m in movie_keys]
        cat_of_item, cats = remap(np.array(picked, dtype=object))
        item_cat = np.r_[0, cat_of_item].astype(np.int64)
        unknown = int(sum(1 for m in movie_keys if int(m) not in genres))
        user_id, _ = remap(user_raw)
        seqs = group_by_user(user_id, time)
        o = seqs.order
        s_item, s_label, s_time, owner = item_id[o], label[o], time[o], seqs.owner

        # a row's history: the same user's strictly earlier behaviours (all, or positives only)
        in_history = np.ones(len(o), dtype=bool) if c.history == "all" else s_label > 0
        offsets, end = history_ends(seqs, s_time, in_history)
        hist_item = s_item[in_history]
        keep = end >= c.min_history
        n_users = len(seqs)
        user_part = split_users(rng, n_users, c.test_frac, c.val_frac)
        part = user_part[owner]
        columns = {"user": owner + 1, "item": s_item, "cat": item_cat[s_item], "label": s_label}
        schema = behaviour_schema(len(movie_keys), len(cats), c.max_len, aux_negatives=c.aux_negatives)
        splits = [make_split(columns, owner, end, keep & (part == p)) for p in (TRAIN, VAL, TEST)]
        for name, split in zip(("train", "test"), (splits[0], splits[2]), strict=True):
            if not len(split):
                raise DatasetError(
                    f"the {name} split is empty: {len(o)} ratings of {n_users} users, "
                    f"{int((~keep).sum())} rows with fewer than min_history={c.min_history} "
                    "earlier behaviours"
                )
        seq_columns = sequence_columns(hist_item, item_cat, c.aux_negatives)
        data = DatasetSplits(schema, *splits, sequences=Sequences(offsets, seq_columns))
        extras = {"popularity": np.bincount(hist_item, minlength=len(movie_keys) + 1), "item_cat": item_cat}
        if c.aux_negatives:
            self._aux(data, extras)(0)
        data.info = split_stats(
            data,
            layout=layout.name,
            ratings=len(o),
            genre=c.genre,
            history=c.history,
            dropped={f"rows_with_history_shorter_than_{c.min_history}": int((~keep).sum())},
            movies_without_genre_info=unknown,
        )
        return CachedData(data, extras)

    def _aux(self, data: DatasetSplits, extras: dict[str, np.ndarray]) -> AuxNegatives:
        return AuxNegatives.of(data, extras["popularity"], extras["item_cat"], self.config.seed)
