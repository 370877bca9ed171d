"""dataset=movielens: the three GroupLens layouts, the DIN paper protocol, bad input, real ML-100K."""

from __future__ import annotations

import hashlib
import re
import zipfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_raw import Rating, ml_genres, ml_ratings, write_ml1m, write_ml20m, write_ml100k

from ctrbench.datasets import movielens
from ctrbench.datasets.download import RemoteFile
from ctrbench.datasets.movielens import MovieLensDataset
from ctrbench.datasets.rawfiles import DatasetError
from ctrbench.engine.data import ArrayBatches
from ctrbench.results.record import error_line
from ctrbench.schema import DatasetSplits

SPLITS = ("train", "val", "test")
N_MOVIES = 80
ML100K = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k"


def load(root: Path, cache: Path, **options) -> DatasetSplits:
    return MovieLensDataset(MovieLensDataset.Config(root=str(root), cache_dir=str(cache), **options)).load()


def all_rows(data: DatasetSplits, key: str) -> np.ndarray:
    return np.concatenate([getattr(data, s).columns[key] for s in SPLITS])


@pytest.fixture(scope="module")
def ratings() -> list[Rating]:
    return ml_ratings(seed=4, n_users=150, n_movies=N_MOVIES)


@pytest.fixture(scope="module")
def ml100k(ratings, tmp_path_factory) -> Path:
    return write_ml100k(tmp_path_factory.mktemp("ml") / "ml-100k", ratings, N_MOVIES)


def test_three_layouts_give_the_same_rows(ratings, ml100k, tmp_path) -> None:
    loaded = [
        load(ml100k, tmp_path / "c"),
        load(write_ml1m(tmp_path / "ml-1m", ratings, N_MOVIES), tmp_path / "c"),
        load(write_ml20m(tmp_path / "ml-20m", ratings, N_MOVIES), tmp_path / "c"),
    ]
    assert [d.info["layout"] for d in loaded] == ["ml-100k", "ml-1m", "ml-20m"]
    for other in loaded[1:]:
        for name in SPLITS:
            a, b = getattr(loaded[0], name), getattr(other, name)
            for key in ("user", "item", "cat", "label"):
                np.testing.assert_array_equal(a.columns[key], b.columns[key])
            np.testing.assert_array_equal(a.end, b.end)
        assert other.info["categories"] == loaded[0].info["categories"]


def test_label_is_rating_at_least_four_and_every_rating_is_a_row(ratings, ml100k, tmp_path) -> None:
    data = load(ml100k, tmp_path, min_history=0)
    assert sum(len(getattr(data, s)) for s in SPLITS) == len(ratings)
    assert all_rows(data, "label").sum() == sum(r.rating >= 4 for r in ratings)
    assert data.info["users"] == 150 and data.info["items"] == len({r.movie for r in ratings})
    assert "user" not in data.schema and data.schema.group == "user"
    assert {"item", "cat", "hist_item", "hist_cat"} <= set(data.schema.names)


def earlier(ratings: list[Rating], positive_only: bool) -> dict[tuple[int, int], list[int]]:
    """(user, movie) → the movies the user rated strictly earlier, in time order (ties: file order)."""
    by_user: dict[int, list[tuple[int, int, Rating]]] = defaultdict(list)
    for k, r in enumerate(ratings):
        by_user[r.user].append((r.time, k, r))
    out = {}
    for rows in by_user.values():
        rows.sort()
        for _, _, r in rows:
            out[(r.user, r.movie)] = [
                x.movie for t, _, x in rows if t < r.time and (x.rating >= 4 or not positive_only)
            ]
    return out


@pytest.mark.parametrize("history", ["all", "positive"])
def test_history_is_the_strictly_earlier_ratings_in_time_order(ratings, ml100k, tmp_path, history) -> None:
    data = load(ml100k, tmp_path, history=history, max_len=5, min_history=0)
    movie_of = np.r_[0, sorted({r.movie for r in ratings})]
    user_of = np.r_[0, sorted({r.user for r in ratings})]
    expected = earlier(ratings, positive_only=history == "positive")
    for name in SPLITS:
        split = getattr(data, name)
        batch = ArrayBatches(split, data.schema, data.sequences)[torch.arange(len(split))]
        for r in range(len(split)):
            key = (int(user_of[split.columns["user"][r]]), int(movie_of[split.columns["item"][r]]))
            n = int(batch["hist_len"][r])
            assert movie_of[batch["hist_item"][r, :n].numpy()].tolist() == expected[key][-5:]
            cats = batch["hist_cat"][r, :n]
            assert (cats > 0).all() and not batch["hist_item"][r, n:].any()


def test_rows_without_history_are_dropped_and_counted(ratings, ml100k, tmp_path) -> None:
    data = load(ml100k, tmp_path)
    expected = earlier(ratings, positive_only=False)
    empty = sum(1 for r in ratings if not expected[(r.user, r.movie)])
    assert empty > 0
    assert data.info["dropped"] == {"rows_with_history_shorter_than_1": empty}
    assert sum(len(getattr(data, s)) for s in SPLITS) == len(ratings) - empty
    assert min(getattr(data, s).end.min() for s in SPLITS) >= 1


@pytest.mark.parametrize(
    ("genre", "n_cats"),
    [
        ("first", len({ml_genres(m)[0] for m in range(1, N_MOVIES + 1)})),
        ("last", len({ml_genres(m)[-1] for m in range(1, N_MOVIES + 1)})),
        ("combo", len({tuple(ml_genres(m)) for m in range(1, N_MOVIES + 1)})),
    ],
)
def test_genre_choice_for_multi_genre_movies(ml100k, tmp_path, genre, n_cats) -> None:
    data = load(ml100k, tmp_path, genre=genre)
    assert data.info["categories"] == n_cats
    # one category per movie, the same in rows and in histories
    item, cat = all_rows(data, "item"), all_rows(data, "cat")
    lookup = np.zeros(N_MOVIES + 1, dtype=np.int64)
    lookup[item] = cat
    np.testing.assert_array_equal(lookup[item], cat)
    hist = data.sequences.columns
    np.testing.assert_array_equal(lookup[hist["hist_item"]][lookup[hist["hist_item"]] > 0],
                                  hist["hist_cat"][lookup[hist["hist_item"]] > 0])  # fmt: skip


def test_genre_first_and_last_differ_for_multi_genre_movies(ml100k, tmp_path) -> None:
    first, last = load(ml100k, tmp_path, genre="first"), load(ml100k, tmp_path, genre="last")
    assert not np.array_equal(first.train.columns["cat"], last.train.columns["cat"])
    np.testing.assert_array_equal(first.train.columns["item"], last.train.columns["item"])


def test_user_split_is_disjoint_with_the_asked_fractions(ml100k, tmp_path) -> None:
    data = load(ml100k, tmp_path, test_frac=0.3, val_frac=0.2, seed=7)
    users = {s: set(getattr(data, s).columns["user"].tolist()) for s in SPLITS}
    assert (
        not users["train"] & users["val"]
        and not users["train"] & users["test"]
        and not users["val"] & users["test"]
    )
    assert len(users["test"]) == 45 and len(users["val"]) == 21 and len(users["train"]) == 84
    other = load(ml100k, tmp_path, test_frac=0.3, val_frac=0.2, seed=8)
    assert set(other.test.columns["user"].tolist()) != users["test"]


def test_layout_in_a_subfolder_and_wrong_root(ml100k, tmp_path) -> None:
    assert load(ml100k.parent, tmp_path).info["layout"] == "ml-100k"
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "ratings.csv").write_text("userId,movieId,rating,timestamp\n")
    with pytest.raises(
        DatasetError, match=r"holds no MovieLens files \(expected u\.data \+ u\.item .*ratings\.dat"
    ):
        load(tmp_path / "empty", tmp_path)
    with pytest.raises(DatasetError, match="is not a folder"):
        load(tmp_path / "missing", tmp_path)


def test_malformed_lines_give_file_and_line(ratings, tmp_path) -> None:
    root = write_ml100k(tmp_path / "ml", ratings[:200], N_MOVIES)
    lines = (root / "u.data").read_text().splitlines()
    lines[41] = "12\t7\tfive\t880000000"
    (root / "u.data").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"u\.data:42: malformed line \(a field is not a number\)"):
        load(root, tmp_path / "c")
    lines[41] = "12\t7\t5"
    (root / "u.data").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"u\.data:42: malformed line \(3 fields"):
        load(root, tmp_path / "c")
    root = write_ml20m(tmp_path / "ml20", ratings[:200], N_MOVIES)
    lines = (root / "movies.csv").read_text().splitlines()
    lines[3] = "x3,Movie,Drama"
    (root / "movies.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"movies\.csv:4: malformed line"):
        load(root, tmp_path / "c")


def test_movies_missing_from_the_movie_file_are_counted(ratings, tmp_path) -> None:
    root = write_ml1m(tmp_path / "ml", ratings, N_MOVIES)
    lines = (root / "movies.dat").read_text(encoding="latin-1").splitlines()
    (root / "movies.dat").write_text("\n".join(lines[3:]) + "\n", encoding="latin-1")
    data = load(root, tmp_path / "c")
    assert data.info["movies_without_genre_info"] == 3


def test_empty_ratings_file_is_a_clear_error(tmp_path) -> None:
    root = write_ml100k(tmp_path / "ml", [], N_MOVIES)
    with pytest.raises(DatasetError, match=r"u\.data holds no ratings"):
        load(root, tmp_path / "c")


def test_download_unzips_and_verifies(ratings, ml100k, tmp_path, monkeypatch) -> None:
    archive = tmp_path / "mirror" / "ml-100k.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as z:
        for f in ml100k.iterdir():
            z.write(f, f"ml-100k/{f.name}")
    config = MovieLensDataset.Config(root="", cache_dir=str(tmp_path / "c"), url=archive.as_uri())
    with pytest.raises(DatasetError, match="ml-100k.zip from file://.* did not verify .*published 0e33842e"):
        MovieLensDataset(config).load()  # not the official archive
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    fake = RemoteFile("ml-100k.zip", "https://files.invalid/ml-100k.zip", archive.stat().st_size, md5)
    monkeypatch.setitem(movielens.ARCHIVES, "ml-100k", fake)
    data = MovieLensDataset(config).load()
    assert data.info["layout"] == "ml-100k" and data.info["users"] == 150
    assert (tmp_path / "c" / "movielens" / "raw" / "ml-100k" / "u.data").is_file()


@pytest.mark.skipif(not ML100K.is_dir(), reason=f"real MovieLens-100K not found at {ML100K}")
def test_real_ml100k(tmp_path) -> None:
    every = load(ML100K, tmp_path, min_history=0)
    assert every.info["users"] == 943 and every.info["items"] == 1682
    assert sum(every.info["rows"].values()) == 100_000
    assert sum(every.info["positives"].values()) == 55_375  # ratings of 4 and 5
    data = load(ML100K, tmp_path)  # defaults: first genre, all rated movies, max_len 100, test 27.8 %
    info = data.info
    assert info["categories"] == 19
    assert sum(info["rows"].values()) + info["dropped"]["rows_with_history_shorter_than_1"] == 100_000
    assert info["rows"] == {"train": 64_413, "val": 6_335, "test": 27_117}
    assert info["users_per_split"] == {"train": 613, "val": 68, "test": 262}
    for name in SPLITS:
        assert 0.5 < info["pos_rate"][name] < 0.6
    users = {s: set(getattr(data, s).columns["user"].tolist()) for s in SPLITS}
    assert (
        not users["train"] & users["test"]
        and not users["train"] & users["val"]
        and not users["val"] & users["test"]
    )


# ---- values the protocol cannot use are refused, and nothing is cached --------------------------------
def refused(root: Path, cache: Path, pattern: str) -> str:
    """Loading ``root`` fails with one line matching ``pattern``; no cache or temporary folder is left."""
    with pytest.raises(DatasetError) as err:
        load(root, cache)
    line = error_line(err.value)
    assert "\n" not in str(err.value) and line.startswith("DatasetError: ")
    assert re.search(pattern, line), line
    assert not (cache / "movielens").exists()
    return line


def replace_field(path: Path, line_no: int, column: int, value: str, sep: str) -> None:
    lines = path.read_text(encoding="latin-1").splitlines()
    fields = lines[line_no - 1].split(sep)
    fields[column] = value
    lines[line_no - 1] = sep.join(fields)
    path.write_text("\n".join(lines) + "\n", encoding="latin-1")


@pytest.mark.parametrize("value", ["nan", "inf", "6", "0", "3.5", "-1"])
def test_ml100k_rating_outside_1_to_5_is_refused(ratings, tmp_path, value) -> None:
    root = write_ml100k(tmp_path / "ml", ratings[:300], N_MOVIES)
    replace_field(root / "u.data", 57, 2, value, "\t")
    refused(
        root,
        tmp_path / "c",
        rf"u\.data:57: column 3 \(rating\) has '{re.escape(value)}'; "
        r"ml-100k ratings are whole numbers 1\.\.5 \(1 rows with such values\)",
    )


def test_ml1m_rating_outside_1_to_5_is_refused(ratings, tmp_path) -> None:
    root = write_ml1m(tmp_path / "ml", ratings[:300], N_MOVIES)
    replace_field(root / "ratings.dat", 3, 2, "NaN", "::")
    refused(root, tmp_path / "c", r"ratings\.dat:3: column 3 \(rating\) has 'NaN'; ml-1m ratings are whole")


@pytest.mark.parametrize("value", ["nan", "0.0", "0.25", "5.5", "3.25"])
def test_ml20m_rating_outside_half_stars_is_refused(ratings, tmp_path, value) -> None:
    root = write_ml20m(tmp_path / "ml", ratings[:300], N_MOVIES)
    replace_field(root / "ratings.csv", 11, 2, value, ",")  # line 1 is the header
    refused(
        root,
        tmp_path / "c",
        rf"ratings\.csv:11: column 3 \(rating\) has '{value}'; ml-20m ratings are 0\.5\.\.5 in steps of 0\.5",
    )


def test_ml20m_half_stars_are_ratings(ratings, tmp_path) -> None:
    rows = [
        Rating(r.user, r.movie, 0.5 if k % 7 == 0 else r.rating - 0.5, r.time) for k, r in enumerate(ratings)
    ]
    data = load(write_ml20m(tmp_path / "ml", rows, N_MOVIES), tmp_path / "c", min_history=0)
    assert sum(data.info["positives"].values()) == sum(r.rating >= 4 for r in rows)


@pytest.mark.parametrize(
    ("column", "value", "name"), [(0, "nan", "user"), (1, "7.5", "movie"), (3, "inf", "time")]
)
def test_non_integer_ids_and_times_are_refused(ratings, tmp_path, column, value, name) -> None:
    root = write_ml100k(tmp_path / "ml", ratings[:300], N_MOVIES)
    replace_field(root / "u.data", 9, column, value, "\t")
    refused(
        root,
        tmp_path / "c",
        rf"u\.data:9: column {column + 1} \({name}\) has '{value}'; the {name} must be a whole",
    )


def test_blank_lines_do_not_shift_the_reported_line(ratings, tmp_path) -> None:
    root = write_ml100k(tmp_path / "ml", ratings[:300], N_MOVIES)
    lines = (root / "u.data").read_text().splitlines()
    lines[20:20] = ["", ""]
    lines[40] = "1\t2\t9\t880000000"
    (root / "u.data").write_text("\n".join(lines) + "\n")
    refused(root, tmp_path / "c", r"u\.data:41: column 3 \(rating\) has '9'")


@pytest.mark.parametrize("writer", [write_ml100k, write_ml1m, write_ml20m])
def test_empty_movie_file_is_refused(ratings, tmp_path, writer) -> None:
    root = writer(tmp_path / "ml", ratings[:300], N_MOVIES)
    movies = next(p for p in root.iterdir() if p.name in ("u.item", "movies.dat", "movies.csv"))
    movies.write_text("movieId,title,genres\n" if movies.suffix == ".csv" else "")
    refused(root, tmp_path / "c", rf"{movies.name} holds no movies \(expected one line per movie: ")


def test_several_layouts_under_root_are_listed_not_picked(ratings, tmp_path) -> None:
    write_ml100k(tmp_path / "all" / "ml-100k", ratings[:300], N_MOVIES)
    write_ml20m(tmp_path / "all" / "ml-20m", ratings[:300], N_MOVIES)
    (tmp_path / "all" / "notes").mkdir()
    line = refused(tmp_path / "all", tmp_path / "c", r"holds several MovieLens datasets: ")
    assert f"{tmp_path / 'all' / 'ml-100k'} (ml-100k), {tmp_path / 'all' / 'ml-20m'} (ml-20m)" in line
    assert line.endswith("pick one with dataset.root=<one of them>")
    assert load(tmp_path / "all" / "ml-20m", tmp_path / "c").info["layout"] == "ml-20m"
    write_ml1m(tmp_path / "all" / "ml-20m", ratings[:300], N_MOVIES)  # two layouts in one folder
    with pytest.raises(DatasetError, match=r"holds the files of several MovieLens layouts \(ratings\.dat"):
        load(tmp_path / "all" / "ml-20m", tmp_path / "c")
