from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from ctrbench.datasets.synthetic import SyntheticConfig, SyntheticDataset
from ctrbench.metrics import auc
from ctrbench.schema import DatasetSplits

SMALL = SyntheticConfig(n_users=300, n_items=2000, n_cats=30, max_seq_len=30, max_len=20)
SPLITS = ("train", "val", "test")
SEQ_FIELDS = ("hist_item", "hist_cat", "neg_hist_item", "neg_hist_cat")


def load(config: SyntheticConfig = SMALL, **kw: object) -> DatasetSplits:
    return SyntheticDataset(replace(config, **kw)).load()


def all_arrays(d: DatasetSplits) -> dict[str, np.ndarray]:
    out = {"seq.offsets": d.sequences.offsets}
    out.update({f"seq.{k}": v for k, v in d.sequences.columns.items()})
    for name in SPLITS:
        s = getattr(d, name)
        out.update({f"{name}.{k}": v for k, v in s.columns.items()})
        out[f"{name}.seq"], out[f"{name}.end"] = s.seq, s.end
    return out


@pytest.fixture(scope="module")
def small() -> DatasetSplits:
    return load()


def test_same_seed_identical_different_seed_differs() -> None:
    a, b, c = all_arrays(load()), all_arrays(load()), all_arrays(load(seed=1))
    assert a.keys() == b.keys() == c.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k
    assert not np.array_equal(a["seq.hist_item"][:100], c["seq.hist_item"][:100])
    assert not np.array_equal(a["train.label"][:1000], c["train.label"][:1000])


def test_schema_and_storage_consistency(small: DatasetSplits) -> None:
    d, c = small, SMALL
    sch = d.schema
    assert sch.group == "user" and sch.label == "label" and sch.max_len == c.max_len
    assert {f.name for f in sch.categorical} == {"user", "user_seg", "item", "cat", "ctx"}
    assert [f.name for f in sch.behaviours] == ["hist_item", "hist_cat"]
    assert {f.name: f.negative_of for f in sch.negatives} == {
        "neg_hist_item": "hist_item",
        "neg_hist_cat": "hist_cat",
    }
    assert all(sch[n].length == "hist_len" for n in SEQ_FIELDS)
    assert sch.tables() == {
        "user": c.n_users + 1,
        "user_seg": c.n_segments + 1,
        "item": c.n_items + 1,
        "cat": c.n_cats + 1,
        "ctx": c.n_ctx + 1,
    }

    seqs = d.sequences
    offsets = seqs.offsets
    assert offsets[0] == 0 and np.all(np.diff(offsets) >= c.min_seq_len)
    assert np.all(np.diff(offsets) <= c.max_seq_len) and len(offsets) == c.n_users + 1
    assert set(seqs.columns) == set(SEQ_FIELDS)
    for name, col in seqs.columns.items():
        assert col.dtype == np.int64 and len(col) == offsets[-1], name
        assert col.min() >= 1 and col.max() < sch[name].vocab, name
    assert np.all(seqs.columns["neg_hist_item"] != seqs.columns["hist_item"])

    # One item → category mapping, consistent across sequences and rows.
    ds = SyntheticDataset(SMALL)
    ds.load()
    item_cat = ds.item_cat
    assert item_cat is not None and len(item_cat) == c.n_items + 1
    assert item_cat[0] == 0 and item_cat[1:].min() >= 1 and len(np.unique(item_cat[1:])) == c.n_cats
    assert np.array_equal(item_cat[seqs.columns["hist_item"]], seqs.columns["hist_cat"])
    assert np.array_equal(item_cat[seqs.columns["neg_hist_item"]], seqs.columns["neg_hist_cat"])

    lengths = np.diff(offsets)
    for name in SPLITS:
        s = getattr(d, name)
        assert len(s) > 0 and set(s.columns) == {"user", "user_seg", "item", "cat", "ctx", "label"}
        assert s.columns["label"].dtype == np.float32 and set(np.unique(s.columns["label"])) <= {0.0, 1.0}
        for f in sch.categorical:
            col = s.columns[f.name]
            assert col.dtype == np.int64 and col.min() >= 1 and col.max() < f.vocab, (name, f.name)
        assert s.seq.dtype == np.int64 and s.end.dtype == np.int64
        assert np.array_equal(s.seq + 1, s.columns["user"])
        assert np.all(s.end >= 1) and np.all(s.end < lengths[s.seq])  # the target itself is in the sequence
        assert np.array_equal(item_cat[s.columns["item"]], s.columns["cat"])


def test_candidates_include_the_real_next_behaviour(small: DatasetSplits) -> None:
    s, seqs = small.train, small.sequences
    real_next = seqs.columns["hist_item"][seqs.offsets[s.seq] + s.end]
    share = (s.columns["item"] == real_next).mean()
    assert 0.45 < share < 0.7  # one real next behaviour per random candidate (plus chance hits)


@pytest.mark.parametrize("mode", ["time", "user"])
def test_splits_disjoint_and_non_empty(mode: str) -> None:
    d = load(split=mode)
    keys: dict[str, set[tuple[int, int]]] = {}
    for name in SPLITS:
        s = getattr(d, name)
        assert len(s) > 0
        keys[name] = {(int(u), int(e)) for u, e in zip(s.seq, s.end, strict=True)}
    # No (user, position) impression group is shared between splits.
    assert not keys["train"] & keys["val"] and not keys["train"] & keys["test"]
    assert not keys["val"] & keys["test"]
    n = sum(len(getattr(d, x)) for x in SPLITS)
    assert 0.05 < len(d.test) / n < 0.2 and 0.05 < len(d.val) / n < 0.2
    users = {name: set(getattr(d, name).seq.tolist()) for name in SPLITS}
    if mode == "user":
        assert not users["train"] & users["val"] and not users["train"] & users["test"]
        assert not users["val"] & users["test"]
    else:
        # Per user, validation and test rows come after every training row.
        for later in ("val", "test"):
            sl = getattr(d, later)
            last_train = np.zeros(SMALL.n_users, dtype=np.int64)
            np.maximum.at(last_train, d.train.seq, d.train.end)
            assert np.all(sl.end > last_train[sl.seq])
        first_test = np.full(SMALL.n_users, 10**9)
        np.minimum.at(first_test, d.test.seq, d.test.end)
        assert np.all(d.val.end < first_test[d.val.seq])


def test_label_depends_on_candidate_history_relation(small: DatasetSplits) -> None:
    s, seqs = small.train, small.sequences
    start = seqs.offsets[s.seq]
    recent = np.zeros(len(s), dtype=bool)
    for d in range(5):
        ok = s.end - 1 - d >= 0
        idx = np.where(ok, start + s.end - 1 - d, 0)
        recent |= ok & (seqs.columns["hist_cat"][idx] == s.columns["cat"])
    y = s.columns["label"]
    assert 0.2 < recent.mean() < 0.8
    assert y[recent].mean() > y[~recent].mean() + 0.2
    # Random labels would give an AUC near 0.5 for this single indicator.
    assert auc(y, recent.astype(float)) > 0.65
    # The positive rate is calibrated and the oracle AUC is in the intended band.
    assert abs(float(y.mean()) - SMALL.pos_rate) < 0.05
    assert 0.75 < small.info["oracle_auc"] < 0.95


def test_history_share_matches_direct_loop() -> None:
    ds = SyntheticDataset(replace(SMALL, max_len=4, recency_decay=0.5))
    rng = np.random.default_rng(0)
    beh_cat = rng.integers(1, 4, size=40)
    tgt = np.array([1, 3, 7, 20, 39])
    k = np.array([1, 3, 5, 9, 2])  # positions inside their (imaginary) sequences
    cand_cat = rng.integers(1, 4, size=(5, 2))
    got = ds._history_share(beh_cat, tgt, k, cand_cat)
    for r in range(5):
        for j in range(2):
            w = [0.5**d for d in range(min(k[r], 4))]
            hit = [wd for d, wd in enumerate(w) if beh_cat[tgt[r] - 1 - d] == cand_cat[r, j]]
            assert got[r, j] == pytest.approx(sum(hit) / sum(w))


def test_info_summary(small: DatasetSplits) -> None:
    assert small.info["n_rows"] == {n: len(getattr(small, n)) for n in SPLITS}
    assert set(small.info["pos_rate"]) == set(SPLITS)
    assert small.info["gen_seconds"] >= 0


def test_million_items_generate_quickly() -> None:
    t = time.perf_counter()
    d = load(n_items=1_000_000, n_cats=500, n_users=2000)
    assert time.perf_counter() - t < 5.0
    assert d.schema["item"].vocab == 1_000_001
    items = np.concatenate([getattr(d, n).columns["item"] for n in SPLITS])
    assert items.max() <= 1_000_000 and len(np.unique(items)) > 1000


def test_item_effect_changes_only_labels_and_only_when_non_zero() -> None:
    base, zero = load(), load(item_std=0.0)
    a, z, b = all_arrays(base), all_arrays(zero), all_arrays(load(item_std=1.5))
    for k in a:
        assert np.array_equal(a[k], z[k]), k
        if not k.endswith(".label"):
            assert np.array_equal(a[k], b[k]), k  # same behaviours, candidates, context and splits
    assert not np.array_equal(a["train.label"], b["train.label"])
    assert "oracle_auc_no_item" not in base.info
    d = load(item_std=1.5)
    assert d.info["oracle_auc_no_item"] < d.info["oracle_auc"] - 0.03  # item ids carry signal
    assert abs(float(d.train.columns["label"].mean()) - SMALL.pos_rate) < 0.05


def test_high_cardinality_items_are_long_tailed() -> None:
    t = time.perf_counter()
    d = load(n_items=200_000, n_cats=50, n_users=300, item_std=1.5)
    assert time.perf_counter() - t < 2.0
    n = np.bincount(d.sequences.columns["hist_item"], minlength=200_001)[1:]
    assert (n == 0).mean() > 0.9  # most items are never behaved on
    assert (n[n > 0] <= 2).mean() > 0.8  # and most of the others only once or twice
    top = np.sort(n)[::-1][: len(n) // 100]
    assert top.sum() / n.sum() > 0.4  # the top 1% of items hold a large share of behaviours


def test_goods_variant_config_is_valid() -> None:
    path = Path(__file__).resolve().parents[1] / "conf" / "dataset" / "synthetic_goods.yaml"
    opts = OmegaConf.to_container(OmegaConf.load(path))
    assert opts.pop("defaults") == ["synthetic", "_self_"]
    ds = SyntheticDataset(SyntheticConfig(**opts))  # validates
    assert ds.config.n_items >= 1_000_000 and ds.config.item_std > 0


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("n_users", 0),
        ("n_cats", 5000),
        ("n_interests", 31),
        ("min_seq_len", 1),
        ("max_seq_len", 3),
        ("switch_prob", 1.5),
        ("noise", -0.1),
        ("pos_rate", 1.0),
        ("recency_decay", 0.0),
        ("split", "random"),
        ("val_frac", 0.0),
        ("test_frac", 0.95),
        ("negatives", -1),
        ("item_std", -0.5),
    ],
)
def test_bad_option_raises_value_error(option: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"dataset\.{option}=") as err:
        SyntheticDataset(replace(SMALL, **{option: value}))
    assert "\n" not in str(err.value) and repr(value) in str(err.value)


def test_too_small_config_names_the_empty_split() -> None:
    with pytest.raises(ValueError, match=r"split 'val' is empty.*dataset\.val_frac"):
        load(n_users=3, min_seq_len=2, max_seq_len=2, val_frac=0.01, test_frac=0.01)
