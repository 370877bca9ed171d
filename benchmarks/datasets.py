"""Build time and peak memory of ``dataset=events`` on generated impression logs.

    python benchmarks/datasets.py [--rows 1e6 1e7] [--huge] [--old /work/old] [--no-pandas]
                                  [--taobao-behaviours N] [--work DIR] [--keep]

**Logs.** :func:`generate` writes an impression log with a realistic shape, vectorized with numpy and
written with pyarrow: users and items drawn from Zipf laws (a few heavy users and hit items, a long
tail), activity in bursts (sessions of a geometric number of impressions seconds apart, session
starts spread over 14 days), a click rate near 5 %, an item category and a slot. Six columns
``user,item,cat,clicked,ts,slot`` (epoch seconds), written twice: one CSV file and Parquet shards by
day in hive partitions (``date=2024-01-01/part-0.parquet``).

**Measured**, each build in its own child process with a fresh cache folder (peak RSS of that child
from ``os.wait4``'s rusage): ``events csv`` / ``events parquet`` — :class:`EventsDataset` on the CSV and
on the folder of shards (time split by fractions; the wall time covers reading, building and writing
the cache); ``cached`` — a second process loading the same key (memory-mapped); ``old events csv`` —
the loader of an older checkout (``--old``, put first on ``PYTHONPATH``) at 10⁶ rows only;
``pandas csv`` — the same build written plainly with pandas (needs ``pip install pandas``; skipped when
it is missing): read, factorize ids in sorted order, stable sort by (user, time), each row's number of
earlier clicks of its user, split by time. ``--huge`` adds 10⁸ rows. ``--taobao-behaviours N`` also
times ``dataset=taobao`` on a log written by ``benchmarks/taobao_log.py`` (when that file exists).

Not a test: numbers depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
START = int(dt.datetime(2024, 1, 1, tzinfo=dt.UTC).timestamp())
DAYS = 14
CHUNK = 5_000_000
MAPPING = dict(user="user", item="item", category="cat", label="clicked", timestamp="ts")


def _zipf(rng: np.random.Generator, n: int, size: int, a: float) -> np.ndarray:
    """Ranks 0..n-1 with P(rank k) ∝ (k + 1)^-a (inverse CDF of the continuous power law, floored)."""
    u = rng.random(size)
    if a == 1.0:
        return np.minimum((np.exp(u * np.log(n + 1)) - 1).astype(np.int64), n - 1)
    top = (n + 1) ** (1 - a)
    return np.minimum(((u * (top - 1) + 1) ** (1 / (1 - a)) - 1).astype(np.int64), n - 1)


def _chunk(
    rng: np.random.Generator, rows: int, n_users: int, n_items: int, ids: dict
) -> dict[str, np.ndarray]:
    """``rows`` impressions in sessions: (user, start) per session, impressions ~20 s apart."""
    lengths = rng.geometric(1 / 8, size=rows // 8 + 16)
    lengths = lengths[: np.searchsorted(np.cumsum(lengths), rows) + 1]
    lengths[-1] -= lengths.sum() - rows
    session = np.repeat(np.arange(len(lengths)), lengths)
    user = ids["user"][_zipf(rng, n_users, len(lengths), 0.9)][session]
    start = rng.integers(START, START + DAYS * 86400, size=len(lengths))[session]
    gaps = rng.exponential(20.0, size=rows).astype(np.int64) + 1
    first = np.r_[0, np.cumsum(lengths)[:-1]]
    steps = np.cumsum(gaps) - np.repeat(np.cumsum(gaps)[first] - gaps[first], lengths)
    item = ids["item"][_zipf(rng, n_items, rows, 1.05)]
    return {
        "user": user,
        "item": item,
        "cat": ids["cat"][item % len(ids["cat"])],
        "clicked": (rng.random(rows) < 0.05).astype(np.int8),
        "ts": np.minimum(start + steps, START + DAYS * 86400 - 1),
        "slot": rng.integers(0, 12, size=rows).astype(np.int16),
    }


def generate(folder: Path, rows: int, seed: int = 0) -> tuple[Path, Path]:
    """Write ``folder/log.csv`` and ``folder/shards/date=…/part-<k>.parquet``; returns both."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    n_users, n_items = max(rows // 40, 100), max(rows // 25, 100)
    ids = {  # raw ids are not ranks: the popular ones are anywhere in the id space
        "user": rng.permutation(n_users) + 10_000,
        "item": rng.permutation(n_items) + 500_000,
        "cat": rng.permutation(max(n_items // 200, 10)) + 7,
    }
    folder.mkdir(parents=True, exist_ok=True)
    csv_path, shards = folder / "log.csv", folder / "shards"
    shutil.rmtree(shards, ignore_errors=True)
    writer = None
    for k, at in enumerate(range(0, rows, CHUNK)):
        table = pa.table(_chunk(rng, min(CHUNK, rows - at), n_users, n_items, ids))
        if writer is None:
            writer = pacsv.CSVWriter(str(csv_path), table.schema)
        writer.write_table(table)
        day = (table.column("ts").to_numpy() - START) // 86400
        order = np.argsort(day, kind="stable")
        bounds = np.searchsorted(day[order], np.arange(DAYS + 1))
        for d in range(DAYS):
            part = table.take(order[bounds[d] : bounds[d + 1]])
            name = shards / f"date={dt.date(2024, 1, 1) + dt.timedelta(days=d)}" / f"part-{k}.parquet"
            name.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(part, name, row_group_size=1 << 20)
    if writer is not None:
        writer.close()
    return csv_path, shards


CHILD_GENERATE = """
import json, runpy, sys
from pathlib import Path
generate = runpy.run_path(sys.argv[3])["generate"]
generate(Path(sys.argv[1]), int(sys.argv[2]), 0)
print(json.dumps({}))
"""

CHILD_EVENTS = """
import json, sys, time
from ctrbench.datasets.events import EventsDataset
root, cache = sys.argv[1], sys.argv[2]
t = time.perf_counter()
data = EventsDataset(EventsDataset.Config(root=root, cache_dir=cache, **json.loads(sys.argv[3]))).load()
rows = sum(len(getattr(data, s)) for s in ("train", "val", "test"))
print(json.dumps({"seconds": time.perf_counter() - t, "rows": rows, "build": data.info.get("build_seconds"),
                  "code": __import__("ctrbench").__file__}))
"""

CHILD_TAOBAO = """
import json, sys, time
from ctrbench import registry
t = time.perf_counter()
data = registry.build("dataset", "taobao", {"root": sys.argv[1], "cache_dir": sys.argv[2]}).load()
rows = sum(len(getattr(data, s)) for s in ("train", "val", "test"))
print(json.dumps({"seconds": time.perf_counter() - t, "rows": rows, "build": data.info.get("build_seconds")}))
"""

CHILD_PANDAS = """
import json, sys, time
t = time.perf_counter()
import numpy as np, pandas as pd
df = pd.read_csv(sys.argv[1], dtype={"user": str, "item": str, "cat": str, "slot": str}, engine="pyarrow")
codes = {c: pd.factorize(df[c], sort=True)[0] + 1 for c in ("user", "item", "cat", "slot")}
df = pd.DataFrame({**codes, "label": df["clicked"].astype("float32"), "ts": df["ts"]})
df = df.sort_values(["user", "ts"], kind="stable").reset_index(drop=True)
pos = df["label"].gt(0).astype("int64")
before = pos.groupby(df["user"]).cumsum() - pos   # clicks of the user before this row (file order)
end = before.groupby([df["user"], df["ts"]]).transform("first")   # equal times are not history
rank = df["ts"].rank(method="first").to_numpy()
n = len(df)
part = np.where(rank > 0.9 * n, 2, np.where(rank > 0.8 * n, 1, 0))
splits = {p: df[(part == p) & (end.to_numpy() >= 1)] for p in range(3)}
rows = sum(len(s) for s in splits.values())
print(json.dumps({"seconds": time.perf_counter() - t, "rows": int(rows)}))
"""


def child(code: str, args: list[str], cwd: Path, pythonpath: str = "") -> dict:
    """Run ``code`` in a fresh interpreter; its JSON line + its own peak RSS (GB) and wall time."""
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    if pythonpath:
        env["PYTHONPATH"] = pythonpath + os.pathsep + env.get("PYTHONPATH", "")
    started = time.perf_counter()
    # run outside the source tree: ``python -c`` puts the working folder first on sys.path
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args], env=env, cwd=cwd, stdout=subprocess.PIPE, text=True
    )
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if status != 0:
        return {"error": f"exit status {status >> 8}", "wall": wall}
    result = json.loads(out.strip().splitlines()[-1])
    return result | {"rss_gb": usage.ru_maxrss / 2**20, "wall": wall}


def _code(r: dict) -> str:
    return str(Path(r.get("code", "?")).parent.parent)


def row(name: str, n: int, r: dict) -> str:
    if "error" in r:
        return f"| {name} | {n:,} | failed ({r['error']}) | | | |"
    seconds = r["seconds"]
    return (
        f"| {name} | {n:,} | {seconds:.2f} | {n / seconds / 1e6:.2f} | {r['rss_gb']:.2f} | "
        f"{r.get('build') if r.get('build') is not None else '-'} |"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=float, nargs="+", default=[1e6, 1e7])
    p.add_argument("--huge", action="store_true", help="also 10^8 rows (needs ~24 GB RAM, ~15 GB disk)")
    p.add_argument("--old", default="/work/old", help="an older checkout, timed at 10^6 rows ('' = skip)")
    p.add_argument("--no-pandas", action="store_true")
    p.add_argument("--taobao-behaviours", type=int, default=0)
    p.add_argument("--work", default="", help="folder for logs and caches (default: a temporary one)")
    p.add_argument("--keep", action="store_true", help="keep the generated logs and caches")
    args = p.parse_args()
    sizes = [int(n) for n in args.rows] + ([100_000_000] if args.huge else [])
    work = Path(args.work or tempfile.mkdtemp(prefix="ctrbench-datasets-"))
    work.mkdir(parents=True, exist_ok=True)
    opts = json.dumps({**MAPPING, "extra": ["slot"]})
    lines = [
        "| build | rows | seconds | M rows/s | peak RSS (GB) | of which build (s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    try:
        for n in sizes:
            # generated in a child: a child's peak RSS starts from its parent's RSS at fork time, so the
            # measuring process stays small
            gen = child(CHILD_GENERATE, [str(work / f"log-{n}"), str(n), str(Path(__file__).resolve())], work)
            csv_path, shards = work / f"log-{n}" / "log.csv", work / f"log-{n}" / "shards"
            print(f"generated {n:,} rows in {gen['wall']:.1f} s ({work / f'log-{n}'})", flush=True)
            for name, source in (("events csv", csv_path), ("events parquet shards", shards)):
                cache = work / f"cache-{n}-{source.name}"
                shutil.rmtree(cache, ignore_errors=True)
                lines.append(row(name, n, child(CHILD_EVENTS, [str(source), str(cache), opts], work)))
                print(lines[-1], flush=True)
                hit = child(CHILD_EVENTS, [str(source), str(cache), opts], work)
                lines.append(row(f"{name}, cached", n, hit | {"build": None}))
                print(lines[-1], flush=True)
            if n == 1_000_000 and args.old and Path(args.old).is_dir():
                cache = work / f"cache-{n}-old"
                shutil.rmtree(cache, ignore_errors=True)
                old = child(CHILD_EVENTS, [str(csv_path), str(cache), opts], work, pythonpath=args.old)
                lines.append(row(f"old events csv ({_code(old)})", n, old))
                print(lines[-1], flush=True)
            if not args.no_pandas and n <= 10_000_000:
                lines.append(row("pandas csv", n, child(CHILD_PANDAS, [str(csv_path)], work)))
                print(lines[-1], flush=True)
            if not args.keep:
                shutil.rmtree(work / f"log-{n}", ignore_errors=True)
        taobao = HERE / "taobao_log.py"
        if args.taobao_behaviours and taobao.is_file():
            folder, n = work / "taobao", args.taobao_behaviours
            gen = child(CHILD_GENERATE, [str(folder), str(n), str(taobao)], work)
            print(f"generated {n:,} Taobao behaviour lines in {gen['wall']:.1f} s", flush=True)
            shutil.rmtree(work / "cache-taobao", ignore_errors=True)
            lines.append(
                row(
                    "taobao (behaviour lines)",
                    n,
                    child(CHILD_TAOBAO, [str(folder), str(work / "cache-taobao")], work),
                )
            )
            print(lines[-1], flush=True)
            hit = child(CHILD_TAOBAO, [str(folder), str(work / "cache-taobao")], work)
            lines.append(row("taobao, cached", n, hit | {"build": None}))
        elif args.taobao_behaviours:
            print(f"--taobao-behaviours: {taobao} does not exist; skipped")
    finally:
        if not args.keep and not args.work:
            shutil.rmtree(work, ignore_errors=True)
    print("\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
