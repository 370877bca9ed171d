"""dataset=amazon: DIN and DIEN protocols on generated files in the exact raw formats, bad inputs."""

from __future__ import annotations

import gzip
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_raw import Review, amazon_reviews, write_amazon, write_gzip_lines

from ctrbench.datasets.amazon import AmazonDataset
from ctrbench.datasets.rawfiles import DatasetError
from ctrbench.datasets.sequences import PopularitySampler
from ctrbench.engine.data import ArrayBatches
from ctrbench.results.record import error_line
from ctrbench.schema import DatasetSplits

SPLITS = ("train", "val", "test")
MISSING = {"B0000007", "B0000011"}  # reviewed items without a meta line


def load(root: Path, cache: Path, **options) -> DatasetSplits:
    return AmazonDataset(AmazonDataset.Config(root=str(root), cache_dir=str(cache), **options)).load()


def user_items(reviews: list[Review]) -> dict[str, list[str]]:
    """Each user's asins in time order (ties in file order), as the protocol reads them."""
    by_user: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
    for k, r in enumerate(reviews):
        by_user[r.user].append((r.time, k, r.asin))
    return {u: [a for _, _, a in sorted(v)] for u, v in by_user.items()}


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Review]]:
    """400 users with 1..9 reviews (some too short), 2 reviewed items without meta."""
    reviews = amazon_reviews(seed=3, n_users=400, n_items=250, min_len=1, max_len=9)
    root = tmp_path_factory.mktemp("amazon")
    write_amazon(root, reviews, without_meta=MISSING)
    return root, reviews


@pytest.fixture(scope="module")
def din(raw, tmp_path_factory) -> DatasetSplits:
    return load(raw[0], tmp_path_factory.mktemp("cache"), protocol="din")


@pytest.fixture(scope="module")
def dien(raw, tmp_path_factory) -> DatasetSplits:
    return load(raw[0], tmp_path_factory.mktemp("cache"), protocol="dien")


def kept_din(reviews: list[Review], without_meta: set[str]) -> dict[str, list[str]]:
    seqs = user_items([r for r in reviews if r.asin not in without_meta])
    return {u: s for u, s in seqs.items() if len(s) >= 2}


def test_din_counts_follow_the_formula(din, raw) -> None:
    seqs = kept_din(raw[1], MISSING)
    n_reviews, n_users = sum(map(len, seqs.values())), len(seqs)
    info = din.info
    assert len(din.train) + len(din.val) == 2 * (n_reviews - 2 * n_users)
    assert len(din.test) == 2 * n_users
    assert info["users"] == n_users and info["reviews"] == n_reviews
    assert info["din_train_plus_val_rows"] == info["din_formula_2x_reviews_minus_2x_users"]
    with_meta = user_items([r for r in raw[1] if r.asin not in MISSING])
    n_short = sum(1 for s in with_meta.values() if len(s) < 2)
    assert n_short > 0 and info["dropped"]["users_with_fewer_than_2_reviews"] == n_short
    assert info["dropped"]["items_without_meta"] == 2
    assert info["dropped"]["reviews_of_items_without_meta"] == sum(r.asin in MISSING for r in raw[1])
    # categories[-1][-1] of the fixture is one of 4 "Last*" names (DIEN's [0][-1]: 6 "First*")
    assert info["categories"] == 4
    assert "user" not in din.schema and "uid" not in din.schema


def test_din_without_validation_is_the_original_training_set(raw, tmp_path) -> None:
    data = load(raw[0], tmp_path, protocol="din", val_frac=0.0)
    seqs = kept_din(raw[1], MISSING)
    assert len(data.val) == 0
    assert len(data.train) == 2 * (sum(map(len, seqs.values())) - 2 * len(seqs))


def test_din_rows_pair_positive_and_negative_on_each_prefix(din) -> None:
    seqs = din.sequences
    for name in SPLITS:
        split = getattr(din, name)
        lab, item = split.columns["label"], split.columns["item"]
        assert np.array_equal(lab[0::2], np.ones(len(split) // 2)) and not lab[1::2].any()
        assert np.array_equal(split.seq[0::2], split.seq[1::2]) and np.array_equal(
            split.end[0::2], split.end[1::2]
        )
        start = seqs.offsets[split.seq[0::2]]
        # the positive is the behaviour right after the history
        assert np.array_equal(item[0::2], seqs.columns["hist_item"][start + split.end[0::2]])
    n = np.diff(seqs.offsets)
    assert np.array_equal(din.test.end, n[din.test.seq] - 1)  # test = k = n - 1
    assert np.array_equal(din.val.end, n[din.val.seq] - 2)  # validation = the last training prefix
    assert din.train.end.min() == 1 and (din.train.end <= n[din.train.seq] - 2).all()


def test_din_histories_are_the_users_reviews_in_time_order(din, raw) -> None:
    seqs = kept_din(raw[1], MISSING)
    batches = ArrayBatches(din.train, din.schema, din.sequences)
    batch = batches[torch.arange(len(din.train))]
    # recover asin ids: the positive row items and their histories line up with the raw sequences
    lengths = sorted(len(s) for s in seqs.values())
    assert sorted(np.diff(din.sequences.offsets).tolist()) == lengths
    hist, hl = batch["hist_item"].numpy(), batch["hist_len"].numpy()
    assert np.array_equal(hl, np.minimum(din.train.end, din.schema.max_len))
    for r in range(0, len(din.train), 97):
        s, e = din.train.seq[r], din.train.end[r]
        flat = din.sequences.columns["hist_item"][din.sequences.offsets[s] : din.sequences.offsets[s] + e]
        assert np.array_equal(hist[r, : hl[r]], flat[-din.schema.max_len :])
        assert not hist[r, hl[r] :].any()


def test_no_din_negative_was_reviewed_by_its_user(din) -> None:
    seqs = din.sequences
    for name in SPLITS:
        split = getattr(din, name)
        neg = split.columns["label"] == 0
        for s, item in zip(split.seq[neg], split.columns["item"][neg], strict=True):
            assert item not in seqs.columns["hist_item"][seqs.offsets[s] : seqs.offsets[s + 1]]
        assert (split.columns["cat"] > 0).all()


def test_dien_last_behaviour_rows_and_disjoint_user_split(dien, raw) -> None:
    seqs_raw = user_items(raw[1])
    n_users = sum(1 for s in seqs_raw.values() if len(s) >= 2)
    total = sum(len(getattr(dien, s)) for s in SPLITS)
    assert total == 2 * n_users  # every user: one negative row, one positive row
    n = np.diff(dien.sequences.offsets)
    users = {}
    for name in SPLITS:
        split = getattr(dien, name)
        assert np.array_equal(split.columns["label"][0::2], np.zeros(len(split) // 2))  # negative first
        assert split.columns["label"][1::2].all()
        assert np.array_equal(split.end, n[split.seq] - 1)  # history = every earlier review
        assert (split.columns["item"][0::2] != split.columns["item"][1::2]).all()
        users[name] = set(split.columns["user"].tolist())
    assert (
        not users["train"] & users["test"]
        and not users["train"] & users["val"]
        and not users["val"] & users["test"]
    )
    assert len(users["test"]) == round(0.1 * n_users)
    assert dien.info["default_category"]["items_without_meta"] == 2  # DIEN keeps them, default_cat
    assert dien.info["categories"] == 7  # 6 First* + default_cat
    assert dien.schema["uid"].kind == "categorical"
    assert (dien.train.columns["uid"] == dien.train.columns["user"]).all()
    assert not dien.test.columns["uid"].any() and not dien.val.columns["uid"].any()


def test_dien_split_is_90_10_on_many_users(tmp_path) -> None:
    reviews = amazon_reviews(seed=5, n_users=3000, n_items=400, min_len=2, max_len=3)
    write_amazon(tmp_path / "raw", reviews)
    data = load(
        tmp_path / "raw", tmp_path / "c", protocol="dien", val_frac=0.0, test_frac=0.1, aux_negatives=False
    )
    test_users = len(np.unique(data.test.columns["user"]))
    assert abs(test_users / 3000 - 0.1) < 0.01
    assert len(data.val) == 0 and "neg_hist_item" not in data.schema


def test_aux_negatives_are_redrawn_in_place_per_epoch(dien) -> None:
    cols = dien.sequences.columns
    shared = torch.as_tensor(cols["neg_hist_item"])  # what the engine holds
    dien.resample(0)
    first = cols["neg_hist_item"].copy()
    dien.resample(1)
    assert not np.array_equal(first, cols["neg_hist_item"])
    assert torch.equal(shared, torch.as_tensor(np.asarray(cols["neg_hist_item"])))
    assert (cols["neg_hist_item"] != cols["hist_item"]).all()
    item_cat = np.zeros(cols["hist_item"].max() + 1, dtype=np.int64)
    item_cat[cols["hist_item"]] = cols["hist_cat"]
    known = np.isin(cols["neg_hist_item"], cols["hist_item"])
    assert np.array_equal(item_cat[cols["neg_hist_item"][known]], cols["neg_hist_cat"][known])
    dien.resample(0)
    assert np.array_equal(first, cols["neg_hist_item"])  # seeded by epoch


# ---- bad input ------------------------------------------------------------------------------------
def small(tmp_path: Path, **kw) -> Path:
    reviews = amazon_reviews(seed=1, n_users=30, n_items=60, min_len=3, max_len=5)
    return write_amazon(tmp_path / "raw", reviews, **kw)


def test_truncated_gzip_names_the_file(tmp_path) -> None:
    root = small(tmp_path)
    path = root / "reviews_Electronics_5.json.gz"
    path.write_bytes(path.read_bytes()[:-300])
    with pytest.raises(
        DatasetError, match=r"reviews_Electronics_5\.json\.gz is truncated or corrupt after line \d+"
    ):
        load(root, tmp_path / "c")
    assert not list((tmp_path / "c" / "amazon").glob("*"))  # nothing half-written


def test_malformed_review_line_gives_file_and_line(tmp_path) -> None:
    root = small(tmp_path)
    path = root / "reviews_Electronics_5.json.gz"
    lines = gzip.decompress(path.read_bytes()).decode().splitlines()
    lines[6] = lines[6][:-20]  # cut mid-object
    write_gzip_lines(path, lines)
    with pytest.raises(DatasetError, match=r"reviews_Electronics_5\.json\.gz:7: malformed line \(not JSON"):
        load(root, tmp_path / "c")
    lines[6] = '{"reviewerID": "A1", "unixReviewTime": 5}'
    write_gzip_lines(path, lines)
    with pytest.raises(DatasetError, match=r":7: malformed line \(no field 'asin'\)"):
        load(root, tmp_path / "c")


def test_malformed_meta_line_gives_file_and_line(tmp_path) -> None:
    root = small(tmp_path)
    path = root / "meta_Electronics.json.gz"
    lines = gzip.decompress(path.read_bytes()).decode().splitlines()
    lines[2] = lines[2].replace("'categories': [[", "'categories': [[__import__('os')")
    write_gzip_lines(path, lines)
    with pytest.raises(
        DatasetError, match=r"meta_Electronics\.json\.gz:3: malformed line \(not a Python literal"
    ):
        load(root, tmp_path / "c")


def test_meta_lines_are_python_literals_not_json(tmp_path) -> None:
    """Single quotes, apostrophes in double-quoted strings, nested dicts: parsed, categories read."""
    root = small(tmp_path)
    meta = gzip.decompress((root / "meta_Electronics.json.gz").read_bytes()).decode()
    assert "'asin': '" in meta and "\"Nobody's" in meta
    data = load(root, tmp_path / "c", protocol="dien")
    assert data.info["default_category"] == {"items_without_meta": 0, "items_without_categories": 0}


def test_missing_meta_gets_default_category_counted(tmp_path) -> None:
    reviews = amazon_reviews(seed=1, n_users=30, n_items=60, min_len=3, max_len=5)
    missing = {r.asin for r in reviews[:3]}
    root = write_amazon(tmp_path / "raw", reviews, without_meta=missing)
    data = load(root, tmp_path / "c", protocol="din", missing_meta="default")
    assert data.info["default_category"]["items_without_meta"] == len(missing)
    assert data.info["reviews"] == len(reviews)  # nothing dropped
    dropped = load(root, tmp_path / "c", protocol="din")  # auto = drop under DIN
    assert dropped.info["reviews"] == len(reviews) - sum(r.asin in missing for r in reviews)


def test_short_users_are_dropped_and_counted(tmp_path) -> None:
    reviews = amazon_reviews(seed=1, n_users=30, n_items=60, min_len=3, max_len=5)
    reviews += [Review("LONER1", "B0000001", 10), Review("LONER2", "B0000002", 10)]
    root = write_amazon(tmp_path / "raw", reviews)
    for protocol in ("din", "dien"):
        data = load(root, tmp_path / "c", protocol=protocol)
        assert data.info["dropped"]["users_with_fewer_than_2_reviews"] == 2
        assert data.info["dropped"]["reviews_of_those_users"] == 2
        assert data.info["users"] == 30


def test_empty_result_is_a_clear_error(tmp_path) -> None:
    reviews = amazon_reviews(seed=1, n_users=10, n_items=20, min_len=3, max_len=4)
    root = write_amazon(tmp_path / "raw", reviews, without_meta={r.asin for r in reviews})
    with pytest.raises(DatasetError, match="no usable reviews .* of items without meta"):
        load(root, tmp_path / "c", protocol="din")
    write_gzip_lines(root / "reviews_Electronics_5.json.gz", [])
    with pytest.raises(DatasetError, match="holds no reviews"):
        load(root, tmp_path / "c", protocol="dien")


def test_wrong_root_lists_the_expected_files(tmp_path) -> None:
    root = small(tmp_path)
    with pytest.raises(
        DatasetError, match=r"lacks reviews_Books_5\.json\.gz, meta_Books\.json\.gz .*found: meta_"
    ):
        load(root, tmp_path / "c", category="Books")
    with pytest.raises(
        DatasetError, match="is not a folder; expected a folder holding reviews_Electronics_5"
    ):
        load(tmp_path / "nowhere", tmp_path / "c")


def test_bad_options_are_one_line_errors(tmp_path) -> None:
    with pytest.raises(DatasetError, match="dataset.protocol='bst' is invalid: must be din or dien"):
        AmazonDataset(AmazonDataset.Config(protocol="bst"))
    with pytest.raises(DatasetError, match="dataset.missing_meta"):
        AmazonDataset(AmazonDataset.Config(missing_meta="keep"))


def test_uncompressed_files_are_read_too(tmp_path) -> None:
    root = small(tmp_path)
    for name in ("reviews_Electronics_5.json", "meta_Electronics.json"):
        (root / name).write_bytes(gzip.decompress((root / f"{name}.gz").read_bytes()))
        (root / f"{name}.gz").unlink()
    assert len(load(root, tmp_path / "c").test) == 60


def test_download_from_url_when_root_is_empty(tmp_path) -> None:
    mirror = small(tmp_path)
    cache = tmp_path / "cache"
    data = AmazonDataset(AmazonDataset.Config(root="", cache_dir=str(cache), url=mirror.as_uri())).load()
    assert len(data.test) == 60
    assert (cache / "amazon" / "raw" / "reviews_Electronics_5.json.gz").read_bytes() == (
        mirror / "reviews_Electronics_5.json.gz"
    ).read_bytes()


def test_download_failure_says_what_to_put_where(tmp_path) -> None:
    config = AmazonDataset.Config(root="", cache_dir=str(tmp_path), url=(tmp_path / "offline").as_uri())
    with pytest.raises(DatasetError) as err:
        AmazonDataset(config).load()
    message = str(err.value)
    assert "\n" not in message
    assert "reviews_Electronics_5.json.gz" in message and str(tmp_path / "amazon" / "raw") in message
    assert "dataset.root" in message


# ---- sampling distributions -----------------------------------------------------------------------
def chi2_per_dof(observed: np.ndarray, expected: np.ndarray) -> float:
    """Pearson χ²/dof over cells with expectation ≥ 5 (the rest pooled into one cell)."""
    big = expected >= 5
    obs = np.r_[observed[big], observed[~big].sum()]
    exp = np.r_[expected[big], expected[~big].sum()]
    keep = exp > 0
    return float((((obs - exp) ** 2)[keep] / exp[keep]).sum() / max(keep.sum() - 1, 1))


def test_popularity_sampler_is_proportional_and_excludes() -> None:
    counts = np.array([0, 500, 300, 120, 50, 30])
    exclude = np.resize(np.arange(1, 6), 200_000)
    draws = PopularitySampler(counts).draw(np.random.default_rng(0), exclude)
    assert (draws != exclude).all() and draws.min() >= 1
    p = counts / counts.sum()
    expected = np.zeros(len(counts))
    for j in range(1, 6):
        n_j = (exclude == j).sum()
        q = p / (1 - p[j])
        q[j] = 0
        expected += n_j * q
    observed = np.bincount(draws, minlength=len(counts)).astype(float)
    assert chi2_per_dof(observed, expected) < 3
    uniform = np.full(len(counts), len(draws) / 5.0)
    uniform[0] = 0
    assert chi2_per_dof(observed, uniform) > 100  # the check can tell popularity from uniform


def test_dien_negatives_follow_item_popularity(dien) -> None:
    cols = dien.sequences.columns
    hist = np.asarray(cols["hist_item"])
    pop = np.bincount(hist).astype(float)
    p = pop / pop.sum()
    observed = np.zeros(len(pop))
    for epoch in range(20):
        dien.resample(epoch)
        observed += np.bincount(cols["neg_hist_item"], minlength=len(pop))
    per_positive = np.bincount(hist, minlength=len(pop)) * 20.0
    expected = np.zeros(len(pop))
    for j in np.flatnonzero(per_positive):
        q = p / (1 - p[j])
        q[j] = 0
        expected += per_positive[j] * q
    assert chi2_per_dof(observed, expected) < 2
    # the last behaviour's negative row: drawn from the same popularity, never the positive
    rows = [getattr(dien, s) for s in SPLITS]
    neg = np.concatenate([r.columns["item"][0::2] for r in rows])
    assert np.corrcoef(np.bincount(neg, minlength=len(pop))[1:], pop[1:])[0, 1] > 0.5


def test_din_negatives_are_uniform_over_unseen_items(din) -> None:
    seqs, n_items = din.sequences, din.schema["item"].vocab - 1
    observed = np.zeros(n_items + 1)
    expected = np.zeros(n_items + 1)
    for name in SPLITS:
        split = getattr(din, name)
        neg = split.columns["label"] == 0
        observed += np.bincount(split.columns["item"][neg], minlength=n_items + 1)
        for s, count in zip(*np.unique(split.seq[neg], return_counts=True), strict=True):
            seen = np.unique(seqs.columns["hist_item"][seqs.offsets[s] : seqs.offsets[s + 1]])
            share = np.full(n_items + 1, count / (n_items - len(seen)))
            share[0] = 0
            share[seen] = 0
            expected += share
    assert chi2_per_dof(observed, expected) < 2


def test_dien_statistics_show_the_protocols_user_split(dien, din, raw) -> None:
    n_users = sum(1 for s in user_items(raw[1]).values() if len(s) >= 2)
    n_test = round(0.1 * n_users)  # DIEN: 10 % of the users to test, the rest is its training file
    split = dien.info["dien_user_split"]
    assert split == {
        "train_plus_val_users": n_users - n_test,
        "train_plus_val_rows": 2 * (n_users - n_test),
        "test_users": n_test,
        "test_rows": 2 * n_test,
        "test_user_share": round(n_test / n_users, 4),
    }
    rows, users = dien.info["rows"], dien.info["users_per_split"]
    assert split["train_plus_val_rows"] == rows["train"] + rows["val"] and split["test_rows"] == rows["test"]
    assert split["train_plus_val_users"] == users["train"] + users["val"]
    assert "dien_user_split" not in din.info and "din_train_plus_val_rows" not in dien.info


BAD_REVIEW_LINES = {  # id: (edit of a valid line, the problem reported)
    "garbage-after-the-last-field": (
        lambda line: line[:-2] + '"xyz}',
        r"not JSON: Expecting ',' delimiter at",
    ),
    "a-second-object": (lambda line: line + " {}", r"not JSON: Extra data at column"),
    "bad-literal": (lambda line: line[:-1] + ', "verified": tru}', r"not JSON: Expecting value at column"),
    "no-colon": (lambda line: line.replace('"asin": ', '"asin" '), r"not JSON: Expecting ':' delimiter"),
    "open-list": (lambda line: line.replace("[0, 0]", "[0, 0"), r"not JSON: Expecting ',' delimiter"),
    "bad-escape": (
        lambda line: line.replace('"reviewText": "', '"reviewText": "\\q'),
        r"not JSON: Invalid \\escape",
    ),
    "a-list": (lambda line: "[" + line + "]", r"not a JSON object but a list"),
    "fractional-time": (lambda line: line.replace('Time": ', 'Time": 1.5, "x": '), r"unixReviewTime is 1\.5"),
}


@pytest.mark.parametrize("case", BAD_REVIEW_LINES)
def test_review_line_that_is_not_one_json_object_is_refused(tmp_path, case) -> None:
    edit, problem = BAD_REVIEW_LINES[case]
    root = small(tmp_path)
    path = root / "reviews_Electronics_5.json.gz"
    lines = gzip.decompress(path.read_bytes()).decode().splitlines()
    lines[11] = edit(lines[11])
    write_gzip_lines(path, lines)
    with pytest.raises(DatasetError) as err:
        load(root, tmp_path / "c")
    line = error_line(err.value)
    assert "\n" not in str(err.value)
    assert re.search(rf"^DatasetError: {re.escape(str(path))}:12: malformed line \({problem}", line), line
    assert not (tmp_path / "c" / "amazon").exists()
