"""Raw dataset files in their exact original formats, generated for tests.

* Amazon 2014: ``reviews_<C>_5.json.gz`` (gzip, one JSON object per line) and
  ``meta_<C>.json.gz`` (gzip, one Python-literal dict per line, as ``repr`` writes it).
* MovieLens: ML-100K (``u.data`` tab-separated, ``u.item`` ``|``-separated with 19 genre flags,
  latin-1), ML-1M (``ratings.dat``/``movies.dat``, ``::``-separated) and ML-20M/latest
  (``ratings.csv``/``movies.csv`` with a header, genres ``A|B``).
"""

from __future__ import annotations

import csv
import gzip
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
WORDS = (
    "great cable works fine battery charger sound quality price screen fast shipping would buy again".split()
)


@dataclass
class Review:
    user: str
    asin: str
    time: int


def amazon_reviews(
    seed: int, n_users: int, n_items: int, min_len: int = 3, max_len: int = 9, skew: float = 1.0
) -> list[Review]:
    """Reviews with Zipf-like item popularity and per-user lengths in [min_len, max_len]; many
    equal times (days), as in the real files. A user never reviews the same item twice here."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, n_items + 1) ** skew
    weights /= weights.sum()
    out = []
    for u in range(n_users):
        n = int(rng.integers(min_len, max_len + 1))
        items = rng.choice(n_items, size=min(n, n_items), replace=False, p=weights)
        days = np.sort(rng.integers(15000, 15100, size=len(items)))
        out += [Review(f"U{u:05d}", f"B{i:07d}", int(d) * 86400) for i, d in zip(items, days, strict=True)]
    rng.shuffle(out)  # type: ignore[arg-type]
    return out


def review_line(r: Review, text_len: int = 40, rng: np.random.Generator | None = None) -> str:
    rng = rng or np.random.default_rng(0)
    text = " ".join(rng.choice(WORDS, size=max(1, text_len // 6)))[:text_len]
    rec = {
        "reviewerID": r.user,
        "asin": r.asin,
        "reviewerName": "J. O'Neil",
        "helpful": [0, 0],
        "reviewText": text,
        "overall": 5.0,
        "summary": "Five Stars",
        "unixReviewTime": r.time,
        "reviewTime": "06 2, 2013",
    }
    return json.dumps(rec)


def meta_line(asin: str, categories: list[list[str]] | None, related: int = 4) -> str:
    rec: dict[str, object] = {"asin": asin, "title": f"Nobody's {asin} cable", "price": 9.99}
    rec["related"] = {"also_bought": [f"B{k:07d}" for k in range(related)]}
    rec["salesRank"] = {"Electronics": 1234}
    if categories is not None:
        rec["categories"] = categories
    rec["imUrl"] = "http://ecx.images-amazon.com/images/I/x.jpg"
    return repr(rec)


def item_categories(asin: str, n_cats: int = 6) -> list[list[str]]:
    """Two category paths; DIN reads the last one's last element, DIEN the first one's."""
    k = int(asin[1:]) % n_cats
    return [["Electronics", "Computers", f"First{k}"], ["Electronics", f"Last{k % 4}"]]


def write_gzip_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for line in lines:
            f.write(line + "\n")
    return path


def write_amazon(
    root: Path,
    reviews: list[Review],
    category: str = "Electronics",
    without_meta: set[str] | frozenset[str] = frozenset(),
    extra_meta: int = 5,
    text_len: int = 40,
) -> Path:
    """Both Amazon files in ``root``; items in ``without_meta`` get no meta line, ``extra_meta``
    meta lines are for items nobody reviewed (as in the real meta files)."""
    rng = np.random.default_rng(1)
    write_gzip_lines(root / f"reviews_{category}_5.json.gz", [review_line(r, text_len, rng) for r in reviews])
    asins = sorted({r.asin for r in reviews} - set(without_meta))
    lines = [meta_line(a, item_categories(a)) for a in asins]
    lines += [meta_line(f"X{k:09d}", [["Electronics", "Unreviewed"]]) for k in range(extra_meta)]
    write_gzip_lines(root / f"meta_{category}.json.gz", lines)
    return root


# ---- MovieLens ------------------------------------------------------------------------------------
@dataclass
class Rating:
    user: int
    movie: int
    rating: float
    time: int


def ml_ratings(seed: int, n_users: int, n_movies: int, min_len: int = 4, max_len: int = 12) -> list[Rating]:
    rng = np.random.default_rng(seed)
    out = []
    for u in range(1, n_users + 1):
        n = int(rng.integers(min_len, max_len + 1))
        movies = rng.choice(np.arange(1, n_movies + 1), size=min(n, n_movies), replace=False)
        times = 880000000 + np.sort(rng.integers(0, 50, size=len(movies)))  # ties on purpose
        out += [
            Rating(u, int(m), float(rng.integers(1, 6)), int(t)) for m, t in zip(movies, times, strict=True)
        ]
    return out


def ml_genres(movie: int) -> list[str]:
    """One to three genres per movie (ML-100K flag order), deterministic."""
    names = ML100K_GENRES[1:]
    k = 1 + movie % 3
    return sorted({names[(movie * (j + 3)) % len(names)] for j in range(k)}, key=ML100K_GENRES.index)


def write_ml100k(root: Path, ratings: list[Rating], n_movies: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "u.data", "w") as f:
        for r in ratings:
            f.write(f"{r.user}\t{r.movie}\t{int(r.rating)}\t{r.time}\n")
    with open(root / "u.item", "w", encoding="latin-1") as f:
        for m in range(1, n_movies + 1):
            flags = "|".join("1" if g in ml_genres(m) else "0" for g in ML100K_GENRES)
            f.write(f"{m}|Caf\xe9 {m} (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?x|{flags}\n")
    return root


def write_ml1m(root: Path, ratings: list[Rating], n_movies: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "ratings.dat", "w") as f:
        for r in ratings:
            f.write(f"{r.user}::{r.movie}::{int(r.rating)}::{r.time}\n")
    with open(root / "movies.dat", "w", encoding="latin-1") as f:
        for m in range(1, n_movies + 1):
            genres = "|".join(ml_genres(m))
            f.write(f"{m}::Caf\xe9 {m} (1995)::{genres}\n")
    return root


def write_ml20m(root: Path, ratings: list[Rating], n_movies: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "ratings.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["userId", "movieId", "rating", "timestamp"])
        for r in ratings:
            w.writerow([r.user, r.movie, f"{r.rating:.1f}", r.time])
    with open(root / "movies.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["movieId", "title", "genres"])
        for m in range(1, n_movies + 1):
            w.writerow(
                [m, f"Movie, The {m} (1995)", "|".join(ml_genres(m)).replace("Children's", "Children")]
            )
    return root
