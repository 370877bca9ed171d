"""dataset=taobao: BARS TaobaoAd_x1 on generated files in the exact Tianchi format, checked by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_taobao import DAY, T13, Ad, Behaviour, Impression, Profile, random_taobao, write_taobao

from ctrbench.datasets.rawfiles import DatasetError
from ctrbench.datasets.taobao import TaobaoDataset
from ctrbench.engine.data import ArrayBatches
from ctrbench.schema import DatasetSplits

T12 = T13 - DAY
LEVELS = (1, 5, 2, 3, 2, 3, 0, 2)


def load(root: Path, cache: Path, **options) -> DatasetSplits:
    return TaobaoDataset(TaobaoDataset.Config(root=str(root), cache_dir=str(cache), **options)).load()


def tiny() -> tuple[list[Impression], list[Ad], list[Profile], list[Behaviour]]:
    """User 1: six behaviours (two at one second, one at an impression's second, two after the last
    impression); user 2: 61 behaviours before its test impression; user 3 has no profile; ad 12 no
    feature line."""
    imps = [
        Impression(1, T12 + 1000, 10, "430548_1007", 1),  # a: train
        Impression(2, T12 + 5000, 11, "430539_1007", 0),  # c: train
        Impression(1, T13 + 50, 11, "430548_1007", 0),  # b: test
        Impression(3, T12, 10, "430548_1007", 0),  # no profile: dropped
        Impression(2, T13 + 10, 10, "430539_1007", 1),  # d: test
        Impression(1, T12 + 2000, 12, "430548_1007", 1),  # no ad feature: dropped
    ]
    ads = [Ad(10, 100, 7, 3, 500, 10.0), Ad(11, 101, 8, 3, None, 0.5)]
    profiles = [Profile(1, LEVELS), Profile(2, (1, 5, 2, 3, None, 3, 0, None))]
    beh = [
        Behaviour(1, T13 + 50, "pv", 103, 503),  # at b's second: not history, after the last impression
        Behaviour(1, T12 + 1000, "buy", 101, 501),  # at a's second: b's history only
        Behaviour(1, T12 + 600, "pv", 105, 505),
        Behaviour(1, T12 - 100, "pv", 100, 500),
        Behaviour(1, T12 + 600, "pv", 106, 506),  # same second as the line above: after it
        Behaviour(1, T12 + 999, "cart", 102, None),
        Behaviour(1, T13 + 100, "pv", 107, 507),
        Behaviour(1, T12 + 500, "fav", 104, 502),
        Behaviour(9, T12, "pv", 100, 500),  # a user without impressions
    ]
    beh += [Behaviour(2, T12 - 1000 + k, "pv", 200 + k, 600 + k) for k in range(60)]
    beh += [Behaviour(2, T13 + 5, "buy", 999, 999), Behaviour(2, T13 + 10, "pv", 998, 998)]
    return imps, ads, profiles, beh


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[Path, DatasetSplits]:
    root = write_taobao(tmp_path_factory.mktemp("raw"), *tiny())
    return root, load(root, tmp_path_factory.mktemp("cache"), min_count=1)


def raw_histories(data: DatasetSplits, split: str) -> list[list[tuple[str, str, str]]]:
    """What the model sees per row, as raw (cate, brand, btag) strings through the vocabularies."""
    part = getattr(data, split)
    batch = ArrayBatches(part, data.schema, data.sequences)[torch.arange(len(part))]
    voc = data.vocabularies
    out = []
    for r in range(len(part)):
        n = int(batch["hist_len"][r])
        out.append(
            [
                (str(voc["cate_id"][c]), str(voc["brand"][b]), str(voc["btag"][t]))
                for c, b, t in zip(
                    batch["cate_his"][r, :n].tolist(),
                    batch["brand_his"][r, :n].tolist(),
                    batch["btag_his"][r, :n].tolist(),
                    strict=True,
                )
            ]
        )
    return out


def raw_column(data: DatasetSplits, split: str, name: str) -> list[str]:
    table = data.schema[name].table
    return [str(data.vocabularies[table][i]) for i in getattr(data, split).columns[name]]


def test_last_day_is_test_and_rows_without_profile_or_ad_are_dropped(small) -> None:
    _, data = small
    assert data.info["impressions_read"] == 6 and data.info["impressions"] == 4
    assert data.info["dropped"]["impressions_without_user_profile"] == 1
    assert data.info["dropped"]["impressions_without_ad_feature"] == 1
    assert data.info["days"]["test_from"] == "2017-05-13" and len(data.val) == 0
    # train: a (user 1, ad 10), c (user 2, ad 11); test: b (user 1, ad 11), d (user 2, ad 10)
    assert raw_column(data, "train", "userid") == ["1", "2"]
    assert raw_column(data, "train", "adgroup_id") == ["10", "11"]
    assert raw_column(data, "test", "userid") == ["1", "2"]
    assert raw_column(data, "test", "adgroup_id") == ["11", "10"]
    assert data.train.columns["label"].tolist() == [1.0, 0.0] and data.test.columns["label"].tolist() == [
        0.0,
        1.0,
    ]
    assert data.train.columns["user"].tolist() == data.test.columns["user"].tolist()  # GAUC group = user
    assert data.schema.group == "user" and data.schema.max_len == 50


def test_histories_are_earlier_behaviours_in_time_order_capped_at_50(small) -> None:
    _, data = small
    train, test = raw_histories(data, "train"), raw_histories(data, "test")
    a = [
        ("100", "500", "pv"),
        ("104", "502", "fav"),
        ("105", "505", "pv"),
        ("106", "506", "pv"),
        ("102", "NULL", "cart"),
    ]
    assert train[0] == a  # not the buy at a's own second, nothing later
    assert test[0] == [*a, ("101", "501", "buy")]  # b: the buy at a's second is earlier than b
    user2 = [(str(200 + k), str(600 + k), "pv") for k in range(60)]
    assert train[1] == user2[-50:]  # c: the last 50 of 60
    assert test[1] == [*user2[-49:], ("999", "999", "buy")]  # d: not the pv at d's own second
    # stored: user 1 up to b (6), user 2 from the 50 before c to d (60 - 10 + 1)
    assert data.info["behaviours_stored"] == 6 + 51
    assert data.info["behaviours_read"] == 71


def test_features_are_joined_from_profile_and_ad(small) -> None:
    _, data = small
    assert raw_column(data, "train", "cate_id") == ["100", "101"]
    assert raw_column(data, "train", "brand") == ["500", "NULL"]  # ad 11's brand is NULL
    assert raw_column(data, "train", "campaign_id") == ["7", "8"]
    assert raw_column(data, "train", "pid") == ["430548_1007", "430539_1007"]
    assert raw_column(data, "train", "btag") == ["pv", "pv"]  # the candidate's constant btag
    assert raw_column(data, "train", "pvalue_level") == ["2", "NULL"]  # user 2's empty level
    assert raw_column(data, "train", "new_user_class_level") == ["2", "NULL"]
    assert raw_column(data, "train", "cms_group_id") == ["5", "5"]
    price = data.train.columns["price"]
    assert price.shape == (2, 1) and np.allclose(price[:, 0], np.log1p([10.0, 0.5]))
    voc = data.vocabularies
    assert all(v[0] == "" for v in voc.values()) and voc["cate_id"][1] == "<OOV>"
    assert data.schema["cate_his"].table == "cate_id" and data.schema["brand_his"].table == "brand"
    for name, v in voc.items():
        assert len(v) == data.schema.tables()[name]


def test_rare_values_map_to_oov_by_training_counts(tmp_path) -> None:
    imps, ads, profiles, beh = tiny()
    imps.append(Impression(2, T12 + 7000, 10, "430539_1007", 0))  # ad 10 twice in training
    data = load(write_taobao(tmp_path / "raw", imps, ads, profiles, beh), tmp_path / "c", min_count=2)
    assert raw_column(data, "train", "adgroup_id") == ["10", "<OOV>", "10"]  # ad 11 once in training
    assert raw_column(data, "test", "adgroup_id") == ["<OOV>", "10"]
    assert raw_column(data, "train", "userid") == ["<OOV>", "2", "2"]


def test_btags_filter_and_validation_day(tmp_path) -> None:
    imps, ads, profiles, beh = tiny()
    imps.append(Impression(1, T12 - DAY + 5, 10, "430548_1007", 0))  # 05-11
    data = load(
        write_taobao(tmp_path / "raw", imps, ads, profiles, beh),
        tmp_path / "c",
        min_count=1,
        btags=["buy"],
        val_days=1,
    )
    assert len(data.train) == 1 and len(data.val) == 2 and len(data.test) == 2  # 05-11 | 05-12 | 05-13
    assert data.info["behaviours_kept"] == 2  # user 1's buy, user 2's buy
    assert raw_histories(data, "test")[0] == [("101", "501", "buy")]


def test_out_of_core_shards_give_the_same_arrays_as_brute_force(tmp_path) -> None:
    imps, ads, profiles, beh = random_taobao(3)
    root = write_taobao(tmp_path / "raw", imps, ads, profiles, beh)
    one = load(root, tmp_path / "c1", min_count=1, shards=1, max_len=7)
    many = load(root, tmp_path / "c2", min_count=1, shards=4, block_mb=1, max_len=7)
    known_ad = {a.adgroup for a in ads}
    known_user = {p.user for p in profiles}
    for split in ("train", "test"):
        assert raw_histories(one, split) == raw_histories(many, split)
        rows = [i for i in imps if i.adgroup in known_ad and i.user in known_user]
        day = [(i.time + 8 * 3600) // DAY for i in rows]
        last = max(day)
        rows = [i for i, d in zip(rows, day, strict=True) if (d == last) == (split == "test")]
        # brute force, row order: by user code then file order is not promised, so compare as multisets
        expect = []
        for i in rows:
            earlier = sorted((b.time, k) for k, b in enumerate(beh) if b.user == i.user and b.time < i.time)
            hist = [beh[k] for _, k in earlier][-7:]
            expect.append(
                (
                    str(i.user),
                    str(i.adgroup),
                    tuple((str(b.cate), "NULL" if b.brand is None else str(b.brand), b.btag) for b in hist),
                )
            )
        got = list(
            zip(
                raw_column(many, split, "userid"),
                raw_column(many, split, "adgroup_id"),
                map(tuple, raw_histories(many, split)),
                strict=True,
            )
        )
        assert sorted(got) == sorted(expect)


# ---- bad input ------------------------------------------------------------------------------------
def test_bad_values_are_one_line_with_file_line_and_column(tmp_path) -> None:
    imps, ads, profiles, beh = tiny()
    root = write_taobao(tmp_path / "raw", imps, ads, profiles, beh)
    sample = root / "raw_sample.csv"
    lines = sample.read_text().splitlines()
    lines[3] = lines[3].rsplit(",", 2)[0] + ",1,2"  # clk = 2 on line 4
    sample.write_text("\n".join(lines) + "\n")
    with pytest.raises(
        DatasetError, match=r"raw_sample\.csv:4: column 'clk' has '2'; allowed: 0 or 1"
    ) as err:
        load(root, tmp_path / "c")
    assert "\n" not in str(err.value)
    write_taobao(root, imps, ads, profiles, beh)
    log = root / "behavior_log.csv"
    lines = log.read_text().splitlines()
    lines[6] = lines[6].replace(",cart,", ",click,")
    log.write_text("\n".join(lines) + "\n")
    with pytest.raises(
        DatasetError,
        match=r"behavior_log\.csv:7: column 'btag' has 'click'; allowed: one of pv, cart, fav, buy",
    ):
        load(root, tmp_path / "c")
    lines[6] = lines[6].replace(",click,", ",cart,").replace(str(T12 + 999), "yesterday")
    log.write_text("\n".join(lines) + "\n")
    with pytest.raises(
        DatasetError,
        match=r"behavior_log\.csv:7: column 'time_stamp' has 'yesterday'; allowed: a whole number",
    ):
        load(root, tmp_path / "c", block_mb=1)
    assert not [p for p in (tmp_path / "c" / "taobao").iterdir() if not p.name.startswith(".")]


def test_missing_file_and_column_are_named(tmp_path) -> None:
    root = write_taobao(tmp_path / "raw", *tiny())
    (root / "user_profile.csv").write_text(
        (root / "user_profile.csv").read_text().replace("userid", "uid", 1)
    )
    with pytest.raises(
        DatasetError, match=r"user_profile\.csv has no column 'userid' \(header: uid, cms_segid"
    ):
        load(root, tmp_path / "c")
    (root / "ad_feature.csv").unlink()
    with pytest.raises(DatasetError, match=r"lacks ad_feature\.csv"):
        load(root, tmp_path / "c")
    with pytest.raises(DatasetError, match=r"dataset\.root is empty: download raw_sample\.csv"):
        TaobaoDataset(TaobaoDataset.Config()).load()
    with pytest.raises(DatasetError, match=r"dataset\.btags=\['click'\] is invalid"):
        TaobaoDataset(TaobaoDataset.Config(btags=["click"]))


def test_din_trains_on_it(tmp_path, compose_cfg) -> None:
    from ctrbench.engine import job

    root = write_taobao(tmp_path / "raw", *random_taobao(5, n_users=40))
    cfg = compose_cfg(
        [
            "dataset=taobao",
            f"dataset.root={root}",
            f"dataset.cache_dir={tmp_path / 'c'}",
            "dataset.min_count=1",
        ]
        + ["model=din", "trainer.max_epochs=1", "checkpoint=false", "logger=none", "batch_size=64"]
    )
    record = job.run(cfg, tmp_path / "job")
    assert record["status"] == "ok", record.get("error")
    assert 0 <= record["test_auc"] <= 1 and record["dataset_stats"]["rows"]["test"] > 0
