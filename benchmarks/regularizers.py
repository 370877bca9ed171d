"""Step time and peak memory of ``reg=none``, ``l2`` and ``mba`` as the vocabulary grows.

    python benchmarks/regularizers.py [--vocabs 1e4,1e5,1e6,1e7] [--regs none,l2,mba] [--sparse true]
        [--threads N]

Every configuration trains BaseModel (embedding 18, MLP 200-80, Adam; tables with sparse gradients
and row-wise SparseAdam unless ``--sparse false``) on the *same* batches — 256 samples, histories of
up to 50 behaviours, item ids drawn from a Zipf law over the first 10⁴ ids — and only the size of
the item table changes. Each configuration runs in its own process so that its peak RSS is its own.
Prints the median step time (forward, loss + penalty, backward, optimizer step), the peak RSS, and
the ratios against the smallest vocabulary. Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table

from ctrbench import registry
from ctrbench.engine.optim import OptimConfig, build_optimizer, make_sparse
from ctrbench.schema import DatasetSplits, Field, Schema, Sequences, Split

N_CATS, ID_RANGE, MAX_LEN = 100, 10_000, 50


def make_data(vocab: int, n_rows: int, seed: int = 0) -> DatasetSplits:
    """Rows whose ids all lie below 10⁴ (so every vocabulary size sees identical batches)."""
    rng = np.random.default_rng(seed)
    ranks = np.arange(1, ID_RANGE)
    p = ranks**-1.0 / (ranks**-1.0).sum()
    n_beh = n_rows + MAX_LEN
    seq_items = rng.choice(ranks, size=n_beh, p=p)
    item_cat = rng.integers(1, N_CATS, size=ID_RANGE)
    seqs = Sequences(
        offsets=np.array([0, n_beh]), columns={"hist_item": seq_items, "hist_cat": item_cat[seq_items]}
    )
    items = rng.choice(ranks, size=n_rows, p=p)
    split = Split(
        columns={
            "user": rng.integers(1, 1000, size=n_rows),
            "item": items,
            "cat": item_cat[items],
            "label": rng.integers(0, 2, size=n_rows).astype(np.float32),
        },
        seq=np.zeros(n_rows, dtype=np.int64),
        end=MAX_LEN + np.arange(n_rows) - rng.integers(0, MAX_LEN, size=n_rows),
    )
    schema = Schema(
        fields=(
            Field("user", "categorical", vocab=1000),
            Field("item", "categorical", vocab=vocab),
            Field("cat", "categorical", vocab=N_CATS),
            Field("hist_item", "sequence", vocab=vocab, table="item", length="hist_len"),
            Field("hist_cat", "sequence", vocab=N_CATS, table="cat", length="hist_len"),
        ),
        max_len=MAX_LEN,
    )
    return DatasetSplits(schema, split, split, split, sequences=seqs)


def child(reg_name: str, vocab: int, steps: int, warmup: int, batch_size: int, sparse: bool) -> dict:
    from ctrbench.engine.data import ArrayBatches

    torch.manual_seed(0)
    data = make_data(vocab, (steps + warmup) * batch_size)
    reg = registry.build("reg", reg_name, {})
    if hasattr(reg, "fit"):
        reg.fit(data)
    act = registry.build("act", "prelu", {})
    model = registry.build("model", "base", {}, schema=data.schema, activation=act)
    config = OptimConfig(sparse=sparse)
    make_sparse(model, config)
    opt = build_optimizer(model, config)
    rows = ArrayBatches(data.train, data.schema, data.sequences)
    penalty = getattr(reg, "penalty", None)
    times = []
    for step in range(warmup + steps):
        batch = rows[torch.arange(step * batch_size, (step + 1) * batch_size)]
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = F.binary_cross_entropy_with_logits(model(batch), batch["label"])
        extra = penalty(model, batch) if penalty is not None else None
        if extra is not None:
            loss = loss + extra
        loss.backward()
        opt.step()
        if step >= warmup:
            times.append(time.perf_counter() - t0)
    return {
        "step_ms": 1000 * statistics.median(times),
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--vocabs", default="1e4,1e5,1e6,1e7")
    parser.add_argument("--regs", default="none,l2,mba")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--sparse", default="true", choices=["true", "false"])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--json", default="", help="also write the measurements to this JSON file")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sparse = args.sparse == "true"
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        reg, vocab = args.child
        print(json.dumps(child(reg, int(vocab), args.steps, args.warmup, args.batch_size, sparse)))
        return
    vocabs = [int(float(v)) for v in args.vocabs.split(",")]
    regs = args.regs.split(",")
    results: dict[tuple[str, int], dict] = {}
    for vocab in vocabs:
        for reg in regs:  # interleaved, so drifts of a noisy machine hit every regularizer alike
            cmd = [sys.executable, __file__, "--child", reg, str(vocab), "--steps", str(args.steps)]
            cmd += ["--warmup", str(args.warmup), "--batch-size", str(args.batch_size)]
            cmd += ["--sparse", args.sparse, "--threads", str(args.threads)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            results[reg, vocab] = json.loads(out.strip().splitlines()[-1])
    table = Table(title=f"step time and peak RSS by vocabulary (sparse tables: {args.sparse})")
    for name in ("reg", "vocabulary", "step ms", f"× at {vocabs[0]:.0e}", "peak RSS MB"):
        table.add_column(name, justify="left" if name == "reg" else "right")
    for reg in regs:
        first = results[reg, vocabs[0]]["step_ms"]
        for vocab in vocabs:
            r = results[reg, vocab]
            ratio = f"{r['step_ms'] / first:.2f}×"
            table.add_row(reg, f"{vocab:,}", f"{r['step_ms']:.1f}", ratio, f"{r['peak_mb']:.0f}")
        table.add_section()
    Console().print(table)
    if args.json:
        rows = [{"reg": reg, "vocab": vocab, **results[reg, vocab]} for reg in regs for vocab in vocabs]
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
