"""Raw files of Tianchi data set 56 (Taobao display ads) in their exact format, generated for tests.

``raw_sample.csv``: ``user,time_stamp,adgroup_id,pid,nonclk,clk``; ``ad_feature.csv``:
``adgroup_id,cate_id,campaign_id,customer,brand,price`` (brand ``NULL`` when unknown, price with a
decimal point); ``user_profile.csv``: the header ends in a space after ``new_user_class_level`` and
missing levels are empty fields; ``behavior_log.csv``: ``user,time_stamp,btag,cate,brand``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

DAY = 86400
T13 = 1494604800  # 2017-05-13 00:00 in China (UTC+8): the test day
T06 = T13 - 7 * DAY  # 2017-05-06, the first day of raw_sample


@dataclass
class Impression:
    user: int
    time: int
    adgroup: int
    pid: str
    clk: int


@dataclass
class Ad:
    adgroup: int
    cate: int
    campaign: int
    customer: int
    brand: int | None  # None -> NULL
    price: float | None = 1.0  # None -> empty field


@dataclass
class Profile:
    user: int
    levels: tuple[int | None, ...]  # the 8 columns after userid; None -> empty field


@dataclass
class Behaviour:
    user: int
    time: int
    btag: str
    cate: int
    brand: int | None  # None -> NULL


def _cell(v: object) -> str:
    return "" if v is None else str(v)


def write_taobao(
    root: Path,
    impressions: list[Impression],
    ads: list[Ad],
    profiles: list[Profile],
    behaviours: list[Behaviour],
) -> Path:
    """The four files under their original names in ``root`` (created)."""
    root.mkdir(parents=True, exist_ok=True)
    lines = ["user,time_stamp,adgroup_id,pid,nonclk,clk"]
    lines += [f"{i.user},{i.time},{i.adgroup},{i.pid},{1 - i.clk},{i.clk}" for i in impressions]
    (root / "raw_sample.csv").write_text("\n".join(lines) + "\n")
    lines = ["adgroup_id,cate_id,campaign_id,customer,brand,price"]
    lines += [
        f"{a.adgroup},{a.cate},{a.campaign},{a.customer},{'NULL' if a.brand is None else a.brand},"
        f"{'' if a.price is None else repr(float(a.price))}"
        for a in ads
    ]
    (root / "ad_feature.csv").write_text("\n".join(lines) + "\n")
    lines = [
        "userid,cms_segid,cms_group_id,final_gender_code,age_level,pvalue_level,shopping_level,occupation,"
        "new_user_class_level "  # the real header's trailing space
    ]
    lines += [",".join([str(p.user), *map(_cell, p.levels)]) for p in profiles]
    (root / "user_profile.csv").write_text("\n".join(lines) + "\n")
    lines = ["user,time_stamp,btag,cate,brand"]
    lines += [
        f"{b.user},{b.time},{b.btag},{b.cate},{'NULL' if b.brand is None else b.brand}" for b in behaviours
    ]
    (root / "behavior_log.csv").write_text("\n".join(lines) + "\n")
    return root


def random_taobao(
    seed: int, n_users: int = 60, n_ads: int = 40, per_user: int = 8, behaviours_per_user: int = 40
) -> tuple[list[Impression], list[Ad], list[Profile], list[Behaviour]]:
    """8 days of impressions and 3 weeks of behaviours; many equal timestamps (whole minutes), some
    users without a profile, some ads without a feature line, NULL brands and empty levels."""
    rng = np.random.default_rng(seed)
    btags = ("pv", "pv", "pv", "cart", "fav", "buy")
    ads = [
        Ad(
            100 + a,
            int(rng.integers(1, 9)),
            int(rng.integers(1, 20)),
            int(rng.integers(1, 10)),
            None if a % 7 == 0 else int(rng.integers(1, 12)),
            None if a % 11 == 5 else round(float(rng.uniform(1, 500)), 2),
        )
        for a in range(n_ads)
    ]
    profiles = [
        Profile(
            u,
            (
                int(rng.integers(0, 5)),
                int(rng.integers(0, 12)),
                int(rng.integers(1, 3)),
                int(rng.integers(0, 7)),
                None if u % 3 == 0 else int(rng.integers(1, 4)),
                int(rng.integers(1, 4)),
                int(rng.integers(0, 2)),
                None if u % 5 == 0 else int(rng.integers(1, 5)),
            ),
        )
        for u in range(1, n_users + 1)
        if u % 13 != 4  # users without a profile line
    ]
    impressions, behaviours = [], []
    for u in range(1, n_users + 1):
        for _ in range(per_user):
            t = T06 + int(rng.integers(0, 8 * DAY // 60)) * 60
            ad = 100 + int(rng.integers(0, n_ads + 2))  # n_ads.. n_ads+1: no ad_feature line
            impressions.append(
                Impression(u, t, ad, f"43054{int(rng.integers(4, 6))}_1007", int(rng.random() < 0.2))
            )
        for _ in range(behaviours_per_user):
            t = T06 - 14 * DAY + int(rng.integers(0, 22 * DAY // 60)) * 60
            brand = None if rng.random() < 0.1 else int(rng.integers(1, 12))
            behaviours.append(Behaviour(u, t, str(rng.choice(btags)), int(rng.integers(1, 12)), brand))
    behaviours.append(Behaviour(n_users + 50, T06, "pv", 1, 1))  # a user without impressions
    order = rng.permutation(len(impressions))
    impressions = [impressions[i] for i in order]
    order = rng.permutation(len(behaviours))
    return impressions, ads, profiles, [behaviours[i] for i in order]
