"""The fixed cost of each job of a sweep of many short jobs, beyond its training and evaluation.

    python benchmarks/sweep_overhead.py [--jobs 20] [--passes 2] [-- extra overrides]

Runs ``ctrbench -m +experiment=smoke seed=1..N`` (Hydra's basic launcher: one process) as a fresh
command and splits its wall time into: the start (process start to the first job's start: imports,
plugin discovery, composing), each job's own time beyond its training loop and evaluation (building the
data module, model and trainer, loading the cached data, writing the record, the checkpoint and the
predictions), the gaps between jobs (Hydra's launcher), and the end (summary tables, report, curves).
Prints the fixed cost per job = (wall − Σ training − Σ evaluation) / N, the median over the passes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def stamp(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def one_sweep(jobs: int, extra: list[str], folder: Path) -> dict[str, float]:
    command = [
        sys.executable, "-m", "ctrbench", "-m", "+experiment=smoke", f"seed=range(1,{jobs + 1})",
        f"hydra.sweep.dir={folder}", *extra,
    ]  # fmt: skip
    env = dict(os.environ, WANDB_MODE="disabled")
    started = time.time()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    ended = time.time()
    records = [json.loads(p.read_text()) for p in folder.glob("*/result.json")]
    ok = [r for r in records if r.get("status") == "ok"]
    if done.returncode or len(ok) != jobs:
        raise SystemExit(
            f"sweep failed ({len(ok)} of {jobs} ok): {(done.stderr.strip().splitlines() or ['?'])[-1]}"
        )
    ok.sort(key=lambda r: stamp(r["started_at"]))
    train = sum(r["train_loop_s"] for r in ok)
    evaluation = sum(r["eval_s"] for r in ok)
    spans = [stamp(r["finished_at"]) - stamp(r["started_at"]) for r in ok]
    wall = ended - started
    return {
        "wall_s": wall,
        "train_s": train,
        "eval_s": evaluation,
        "start_s": stamp(ok[0]["started_at"]) - started,
        "in_job_s": sum(spans) - train - evaluation,
        "between_jobs_s": stamp(ok[-1]["finished_at"]) - stamp(ok[0]["started_at"]) - sum(spans),
        "end_s": ended - stamp(ok[-1]["finished_at"]),
        "fixed_per_job_s": (wall - train - evaluation) / jobs,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=20)
    p.add_argument("--passes", type=int, default=2)
    p.add_argument("extra", nargs="*", help="more overrides for every job")
    args = p.parse_args()
    passes = []
    with tempfile.TemporaryDirectory(prefix="ctrbench-sweep-") as tmp:
        for n in range(args.passes):
            passes.append(one_sweep(args.jobs, args.extra, Path(tmp) / str(n)))
            row = passes[-1]
            print(
                f"pass {n + 1}: wall {row['wall_s']:.1f} s = training {row['train_s']:.1f} + evaluation "
                f"{row['eval_s']:.1f} + start {row['start_s']:.1f} + in the jobs {row['in_job_s']:.1f} "
                f"+ between jobs {row['between_jobs_s']:.1f} + end {row['end_s']:.1f}: "
                f"{row['fixed_per_job_s']:.2f} s fixed per job"
            )
    median = {key: statistics.median(p[key] for p in passes) for key in passes[0]}
    print(
        f"{args.jobs} jobs: fixed cost {median['fixed_per_job_s']:.2f} s per job beyond training and "
        f"evaluation (median of {args.passes}; in the jobs {median['in_job_s'] / args.jobs:.2f} s each, "
        f"start {median['start_s']:.1f} s and end {median['end_s']:.1f} s once)"
    )
    print(json.dumps({"jobs": args.jobs, "passes": passes, "median": median}))


if __name__ == "__main__":
    main()
