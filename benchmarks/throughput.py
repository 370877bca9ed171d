"""Training throughput of every registered model on the synthetic data.

    python benchmarks/throughput.py [--models din,dien] [--batches 60] [--device cpu|cuda] [--act prelu]

Each model trains for ``--warmup`` + ``--batches`` batches (Adam, batch 256 by default) through
ctrbench's own data path (index-vector batches, histories gathered per batch) and the engine's loss
(CTRTask.training_step, including auxiliary losses); the timed part excludes the warm-up. Prints
samples/s per model as a rich table. Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import time

import torch
from rich.console import Console
from rich.table import Table

from ctrbench import registry
from ctrbench.engine.data import CTRDataModule
from ctrbench.engine.task import CTRTask


def measure(name: str, data, args) -> tuple[float, float]:
    torch.manual_seed(0)
    act = registry.build("act", args.act, {})
    model = registry.build("model", name, {}, schema=data.schema, activation=act).to(args.device)
    task = CTRTask(model, data.schema)
    opt = task.configure_optimizers()
    dm = CTRDataModule(data, args.batch_size, 4096, seed=0)
    batches = iter(dm.train_dataloader())
    seconds, samples = 0.0, 0
    for step in range(args.warmup + args.batches):
        batch = {k: v.to(args.device, non_blocking=True) for k, v in next(batches).items()}
        if args.device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = task.training_step(batch, step)
        loss.backward()
        opt.step()
        if args.device == "cuda":
            torch.cuda.synchronize()
        if step >= args.warmup:
            seconds += time.perf_counter() - t0
            samples += len(batch["label"])
    params = sum(p.numel() for p in model.parameters())
    return samples / seconds, params


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default=",".join(registry.names("model")))
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--act", default="prelu")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    data = registry.build("dataset", "synthetic", {}).load()
    device = (
        torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    )
    table = Table(title=f"training throughput — synthetic default, batch {args.batch_size}, {device}")
    for col in ("model", "samples/s", "parameters"):
        table.add_column(col, justify="left" if col == "model" else "right")
    import warnings

    warnings.filterwarnings("ignore", message=".*reference is not registered.*")
    for name in args.models.split(","):
        rate, params = measure(name, data, args)
        table.add_row(name, f"{rate:,.0f}", f"{params:,}")
    Console().print(table)


if __name__ == "__main__":
    main()
