"""Serving latency of the scoring API: one user's history and N candidates → N probabilities.

    python benchmarks/scoring.py [--models din,dien] [--candidates 200] [--history 50] [--threads 1]

The DIN paper's serving budget is 10 ms for a few hundred candidates. Each model is built with its
default options on the default synthetic schema (weights do not change the cost), wrapped in
:class:`ctrbench.scoring.Scorer`, and called ``--calls`` times with a ``--history``-long history
and ``--candidates`` candidates; prints the median and 95th percentile per call (batch assembly,
the model's forward, sigmoid) on ``--threads`` CPU threads. Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from ctrbench import registry
from ctrbench.scoring import Scorer


def measure(name: str, args) -> tuple[float, float]:
    data = registry.build("dataset", "synthetic", {"n_users": 300, "max_len": args.history}).load()
    schema = data.schema
    torch.manual_seed(0)
    model = registry.build("model", name, {}, schema=schema, activation=registry.build("act", "prelu", {}))
    scorer = Scorer(model, schema)
    rng = np.random.default_rng(0)
    items, cats = schema["item"].vocab, schema["cat"].vocab
    user = {
        "user": 7,
        "user_seg": 1,
        "hist_item": rng.integers(1, items, args.history).tolist(),
        "hist_cat": rng.integers(1, cats, args.history).tolist(),
    }
    candidates = {
        "item": rng.integers(1, items, args.candidates),
        "cat": rng.integers(1, cats, args.candidates),
        "ctx": rng.integers(1, schema["ctx"].vocab, args.candidates),
    }
    for _ in range(10):
        scorer.score(user, candidates)
    times = []
    for _ in range(args.calls):
        t0 = time.perf_counter()
        scorer.score(user, candidates)
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return statistics.median(times), times[int(0.95 * (len(times) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="din,dien")
    parser.add_argument("--candidates", type=int, default=200)
    parser.add_argument("--history", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    table = Table(
        title=f"Scorer.score: {args.candidates} candidates, {args.history} behaviours, "
        f"{args.threads} CPU thread(s), {args.calls} calls"
    )
    for col in ("model", "median ms", "p95 ms"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for name in args.models.split(","):
        median, p95 = measure(name, args)
        table.add_row(name, f"{median:.2f}", f"{p95:.2f}")
    Console().print(table)


if __name__ == "__main__":
    main()
