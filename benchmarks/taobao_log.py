"""Build time, throughput and peak memory of ``dataset=taobao`` on generated raw files at scale.

``generate(folder, n_behaviours, seed)`` writes the four Tianchi files (raw_sample.csv,
ad_feature.csv, user_profile.csv with its trailing-space header, behavior_log.csv) in their exact
format with numpy + the pyarrow CSV writer: users, ads and impressions scaled with the behaviours
as in the real data (~700M behaviours, ~26M impressions, 1.14M users, 847k ads), 8 days of
impressions and 22 days of behaviours, pv ~90 % of the behaviours, NULL brands and empty levels.

    python benchmarks/taobao_log.py --behaviours 10000000 --folder /tmp/taobao-bench
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

DAY = 86400
T06 = 1494000000  # 2017-05-06 00:00 in China (UTC+8)
REAL = {"behaviours": 700_000_000, "impressions": 26_557_961, "users": 1_141_729, "ads": 846_811}


def _write(path: Path, columns: dict[str, object], header: str | None = None) -> None:
    """A CSV with an unquoted header line (pyarrow quotes header names; the real files do not)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    table = pa.table(columns)
    with open(path, "wb") as f:
        f.write((header if header is not None else ",".join(table.column_names)).encode() + b"\n")
        pacsv.write_csv(
            table,
            f,
            write_options=pacsv.WriteOptions(include_header=False, quoting_style="none", batch_size=1 << 20),
        )


def _ints_or_empty(values: np.ndarray, empty: np.ndarray) -> object:
    import pyarrow as pa

    return pa.array(values, mask=empty)


def generate(folder: Path, n_behaviours: int, seed: int = 0) -> dict[str, Path]:
    """The four raw files in ``folder`` with ``n_behaviours`` behaviour lines; returns name → path."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    scale = n_behaviours / REAL["behaviours"]
    n_users = max(10, int(REAL["users"] * scale))
    n_ads = max(10, int(REAL["ads"] * scale))
    n_imp = max(20, int(REAL["impressions"] * scale))
    user_ids = np.sort(rng.choice(np.arange(1, max(2 * n_users, 20)), size=n_users, replace=False))
    # raw_sample: 8 days
    u = user_ids[rng.integers(0, n_users, n_imp)]
    t = T06 + rng.integers(0, 8 * DAY, n_imp)
    clk = (rng.random(n_imp) < 0.05).astype(np.int64)
    pid = np.where(rng.random(n_imp) < 0.6, "430548_1007", "430539_1007")
    ad = 1 + rng.zipf(1.3, n_imp) % (n_ads + n_ads // 50)  # a few ads without a feature line
    paths = {
        name: folder / f"{name}.csv" for name in ("raw_sample", "ad_feature", "user_profile", "behavior_log")
    }
    _write(
        paths["raw_sample"],
        {"user": u, "time_stamp": t, "adgroup_id": ad, "pid": pid, "nonclk": 1 - clk, "clk": clk},
    )
    # ad_feature
    a = np.arange(1, n_ads + 1)
    n_cate = max(5, int(12_978 * min(1.0, scale * 20)))
    n_brand = max(5, int(461_497 * min(1.0, scale * 5)))
    brand = rng.integers(1, n_brand, n_ads)
    price = np.round(np.exp(rng.normal(4.5, 1.5, n_ads)), 2)
    _write(
        paths["ad_feature"],
        {
            "adgroup_id": a,
            "cate_id": rng.integers(1, n_cate, n_ads),
            "campaign_id": rng.integers(1, max(2, n_ads // 2), n_ads),
            "customer": rng.integers(1, max(2, n_ads // 3), n_ads),
            "brand": np.where(rng.random(n_ads) < 0.3, "NULL", brand.astype(str)),
            "price": price,
        },
    )
    # user_profile: ~7 % of the impression users lack a profile line; empty pvalue_level / city level
    has = rng.random(n_users) >= 0.07
    pu = user_ids[has]
    n = len(pu)
    levels = {
        "cms_segid": rng.integers(0, 97, n),
        "cms_group_id": rng.integers(0, 13, n),
        "final_gender_code": rng.integers(1, 3, n),
        "age_level": rng.integers(0, 7, n),
        "pvalue_level": _ints_or_empty(rng.integers(1, 4, n), rng.random(n) < 0.5),
        "shopping_level": rng.integers(1, 4, n),
        "occupation": rng.integers(0, 2, n),
        "new_user_class_level": _ints_or_empty(rng.integers(1, 5, n), rng.random(n) < 0.3),
    }
    header = "userid," + ",".join(levels) + " "  # the real header's trailing space
    _write(paths["user_profile"], {"userid": pu, **levels}, header=header)
    # behavior_log: 22 days ending with the impressions, written in blocks
    tags = np.array(["pv", "cart", "fav", "buy"])
    block = 5_000_000
    with open(paths["behavior_log"], "wb") as f:
        f.write(b"user,time_stamp,btag,cate,brand\n")
        left = n_behaviours
        while left > 0:
            m = min(block, left)
            cols = {
                "user": user_ids[rng.integers(0, n_users, m)],
                "time_stamp": T06 - 14 * DAY + rng.integers(0, 22 * DAY, m),
                "btag": tags[
                    np.searchsorted([0.9, 0.93, 0.96, 1.0], rng.random(m), side="right").clip(max=3)
                ],
                "cate": rng.integers(1, n_cate, m),
                "brand": rng.integers(1, n_brand, m),
            }
            pacsv.write_csv(
                pa.table(cols),
                f,
                write_options=pacsv.WriteOptions(include_header=False, quoting_style="none"),
            )
            left -= m
    return paths


def build(folder: Path, cache: Path, shards: int = 0) -> dict[str, object]:
    """Build ``dataset=taobao`` on ``folder`` in this process; time, rows/s, peak RSS (ru_maxrss)."""
    from ctrbench.datasets.taobao import TaobaoDataset

    peaks = {"RssAnon": 0, "RssFile": 0}
    done = threading.Event()

    def sample() -> None:  # anonymous memory vs pages of mapped files (the spilled and cached arrays)
        while not done.wait(0.1):
            for line in Path("/proc/self/status").read_text().splitlines():
                key, _, value = line.partition(":")
                if key in peaks:
                    peaks[key] = max(peaks[key], int(value.split()[0]))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    data = TaobaoDataset(TaobaoDataset.Config(root=str(folder), cache_dir=str(cache), shards=shards)).load()
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    info = data.info
    return {
        "behaviours": info["behaviours_read"],
        "impressions": info["impressions_read"],
        "stored": info["behaviours_stored"],
        "shards": info["shards"],
        "build_s": round(seconds, 1),
        "behaviours_per_s": round(info["behaviours_read"] / seconds),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "peak_anon_mb": round(peaks["RssAnon"] / 1024),
        "peak_file_mb": round(peaks["RssFile"] / 1024),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--behaviours", type=int, default=10_000_000)
    parser.add_argument("--folder", type=Path, default=None, help="where to write the raw files (kept)")
    parser.add_argument("--shards", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    folder = args.folder or Path(tempfile.mkdtemp(prefix="taobao-bench-"))
    if args.child:  # the build alone in a fresh process, so that ru_maxrss is the build's peak
        print(json.dumps(build(folder, folder / "cache", args.shards)))
        return
    if not (folder / "behavior_log.csv").is_file():
        started = time.perf_counter()
        paths = generate(folder, args.behaviours, args.seed)
        size = sum(p.stat().st_size for p in paths.values())
        took = time.perf_counter() - started
        print(f"generated {args.behaviours:,} behaviours ({size / 1e9:.2f} GB) in {took:.1f} s")
    out = subprocess.run(
        [sys.executable, __file__, "--child", "--folder", str(folder), "--shards", str(args.shards)],
        capture_output=True,
        text=True,
    )
    if out.returncode:
        sys.exit(f"the build failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(json.dumps(result))


if __name__ == "__main__":
    main()
