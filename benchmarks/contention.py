"""Throughput on a machine shared with other work, and a parallel CPU sweep against a sequential one.

    python benchmarks/peers/prepare.py --root ../shared/data/ml-100k     # once: the arrays
    python benchmarks/contention.py --root ../shared/data/ml-100k [--passes 2] [--loads 0 1 2]

Part 1. DIN on MovieLens-100K under the comparison's protocol (``benchmarks/peers``), ``--batches``
training batches, with k processes busy-looping beside it (k in ``--loads``): ctrbench through its
command line with ``threads=auto`` (the default: threads follow the free cores) and ``threads=2``
(fixed: what torch does by itself), and the plain PyTorch loop (``peers/run_plain.py``) with 2 and
with 1 thread. Passes run every (entrant, k) in rotated order. Printed per entrant and k: median
samples/s, the share of its own quiet speed, and the share of the *fair share* of ctrbench's quiet
(default) speed, quiet × cores / (cores + k).

Part 2. Four equal jobs (``seed=1,2,3,4`` of the same DIN job, ``--sweep-epochs`` epochs) as one
``hydra/launcher=gpus hydra.launcher.n_jobs=2`` sweep against the same sweep run one job after
another (Hydra's basic launcher), interleaved over the passes; printed: wall times and their ratio.

Writes ``contention.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "peers"))

from compare import CTRBENCH_MODELS, DATASET, override  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

ROOT = HERE.parent
BUSY = [sys.executable, "-c", "while True: pass"]


def ctrbench_command(args, run_dir: Path, extra: list[str]) -> list[str]:
    name, options = CTRBENCH_MODELS["din"]
    return [
        sys.executable, "-m", "ctrbench", f"model={name}", "dataset=movielens", "act=prelu",
        f"dataset.root={Path(args.root).resolve()}", *(f"dataset.{k}={v}" for k, v in DATASET.items()),
        *(f"model.{k}={override(v)}" for k, v in options.items()),
        "batch_size=256", "checkpoint=false", "logger=none", "resume=false",
        "trainer.enable_progress_bar=false", f"hydra.run.dir={run_dir}", *extra,
    ]  # fmt: skip


def entrants(args, out: Path) -> dict[str, tuple[list[str], Path]]:
    """name: (command, result file)."""
    found = {}
    for threads in ("auto", "2"):
        run_dir = out / f"ctrbench_{threads}"
        extra = [f"threads={threads}", "trainer.max_epochs=1", f"+trainer.limit_train_batches={args.batches}"]
        command = ctrbench_command(args, run_dir, extra)
        found[f"ctrbench threads={threads}"] = (command, run_dir / "result.json")
    for threads in (2, 1):
        result = out / f"plain_{threads}.json"
        found[f"plain PyTorch, {threads} thread{'s' * (threads > 1)}"] = (
            [sys.executable, str(HERE / "peers" / "run_plain.py"), "--model", "din", "--data", str(args.data),
             "--out", str(result), "--threads", str(threads), "--max-batches", str(args.batches)],
            result,
        )  # fmt: skip
    return found


class Busy:
    """``k`` processes spinning on a core each, for the duration of a ``with``."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> Busy:
        self.procs = [subprocess.Popen(BUSY) for _ in range(self.k)]
        time.sleep(0.2 if self.k else 0)
        return self

    def __exit__(self, *exc) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()


def samples_per_s(command: list[str], result: Path, k: int) -> float | None:
    result.unlink(missing_ok=True)
    env = dict(os.environ, WANDB_MODE="disabled")
    env.pop("OMP_NUM_THREADS", None)
    with Busy(k):
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if not result.exists():
        print(f"failed: {' '.join(command[:4])} ...: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
        return None
    return float(json.loads(result.read_text())["samples_per_s"])


def sweep_wall(args, out: Path, parallel: bool, index: int) -> float:
    run_dir = out / f"sweep_{'parallel' if parallel else 'sequential'}_{index}"
    launcher = ["hydra/launcher=gpus", "hydra.launcher.n_jobs=2"] if parallel else []
    command = ctrbench_command(args, run_dir, [f"trainer.max_epochs={args.sweep_epochs}", *launcher])
    command = [*command[:3], "-m", *command[3:]]
    command = [c.replace("hydra.run.dir", "hydra.sweep.dir") for c in command] + ["seed=1,2,3,4"]
    env = dict(os.environ, WANDB_MODE="disabled")
    env.pop("OMP_NUM_THREADS", None)
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    ok = sum(json.loads(p.read_text()).get("status") == "ok" for p in run_dir.glob("*/result.json"))
    if done.returncode or ok != 4:
        raise SystemExit(f"sweep failed ({ok} of 4 ok): {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    return wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, required=True, help="MovieLens-100K raw folder (u.data, u.item)")
    p.add_argument("--data", type=Path, default=HERE / "peers" / "data", help="arrays written by prepare.py")
    p.add_argument("--out", type=Path, default=HERE / "peers" / "out" / "contention")
    p.add_argument("--passes", type=int, default=2)
    p.add_argument("--loads", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--batches", type=int, default=120, help="training batches per throughput run")
    p.add_argument("--sweep-epochs", type=int, default=1)
    p.add_argument("--skip-sweep", action="store_true")
    p.add_argument("--skip-load", action="store_true")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cores = len(os.sched_getaffinity(0))
    report: dict = {"cores": cores, "batches": args.batches, "throughput": {}, "sweep": {}}

    if not args.skip_load:
        runs = entrants(args, args.out)
        cases = [(name, k) for k in args.loads for name in runs]
        measured: dict[tuple[str, int], list[float]] = {case: [] for case in cases}
        for n in range(args.passes):
            shift = n * len(runs) % len(cases)
            for name, k in cases[shift:] + cases[:shift]:
                value = samples_per_s(*runs[name], k)
                if value is not None:
                    measured[(name, k)].append(value)
                print(f"pass {n + 1}: {name}, k={k}: {value and round(value)} samples/s", flush=True)
        median = {case: statistics.median(v) for case, v in measured.items() if v}
        quiet_default = median.get(("ctrbench threads=auto", 0))
        table = Table(title=f"DIN samples/s with k busy processes on {cores} cores (median of {args.passes})")
        for column in ("entrant", "k", "samples/s", "÷ own quiet", "÷ fair share of ctrbench quiet"):
            table.add_column(column, justify="left" if column == "entrant" else "right")
        for (name, k), value in median.items():
            own = median.get((name, 0))
            fair = quiet_default * cores / (cores + k) if quiet_default else None
            row = {"samples_per_s": value, "runs": measured[(name, k)], "of_own_quiet": own and value / own,
                   "of_fair_share": fair and value / fair}  # fmt: skip
            report["throughput"][f"{name} k={k}"] = row
            table.add_row(
                name, str(k), f"{value:,.0f}",
                f"{row['of_own_quiet']:.2f}" if own else "", f"{row['of_fair_share']:.2f}" if fair else "",
            )  # fmt: skip
        Console(width=120).print(table)

    if not args.skip_sweep:
        walls: dict[str, list[float]] = {"sequential": [], "parallel": []}
        for n in range(args.passes):
            for parallel in (n % 2 == 1, n % 2 == 0):
                key = "parallel" if parallel else "sequential"
                walls[key].append(sweep_wall(args, args.out, parallel, n))
                print(f"pass {n + 1}: 4-job sweep {key}: {walls[key][-1]:.1f} s", flush=True)
        seq, par = statistics.median(walls["sequential"]), statistics.median(walls["parallel"])
        ratios = [b / a for a, b in zip(walls["sequential"], walls["parallel"], strict=True)]
        report["sweep"] = {**walls, "ratio_per_pass": ratios, "ratio": statistics.median(ratios)}
        print(
            f"4 equal jobs: one after another {seq:.1f} s, hydra/launcher=gpus n_jobs=2 {par:.1f} s: "
            f"{statistics.median(ratios):.2f}x the time (per pass: {', '.join(f'{r:.2f}' for r in ratios)})"
        )
    (args.out / "contention.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out / 'contention.json'}")


if __name__ == "__main__":
    main()
