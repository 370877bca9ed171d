"""What every runner in ``benchmarks/peers`` shares: its command line, the prepared arrays, and
the result it hands back to ``compare.py``. Imports numpy only (the peers run in their own
virtual environments, without ctrbench).

A runner is called as::

    <venv>/bin/python benchmarks/peers/<runner>.py --data DIR --model din|dien --out OUT.json
        [--epochs 1] [--batch-size 256] [--threads 2] [--max-batches N] [--activation prelu|dice]

and writes ``OUT.json`` (see :func:`write_result`) plus ``OUT.npy``, the predicted click
probabilities of every test row in ``test.npz`` order, from which ``compare.py`` computes AUC and
GAUC with ctrbench's metric code, so every tool is scored the same way.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

import numpy as np

# the comparison's model dimensions (MovieLens-100K, DIN protocol)
EMB_DIM = 16  # per feature: a behaviour is [e_item, e_cat], 32 wide
ATT_HIDDEN = (80, 40)
MLP_HIDDEN = (200, 80)
LR = 1e-3


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--data", type=Path, required=True, help="folder written by prepare.py")
    p.add_argument("--model", choices=("din", "dien"), required=True)
    p.add_argument("--out", type=Path, required=True, help="result JSON; predictions go next to it (.npy)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-batches", type=int, default=0, help="stop each epoch after N batches (0 = all)")
    p.add_argument(
        "--activation", choices=("prelu", "dice"), default="prelu", help="of the MLP and attention"
    )
    p.add_argument("--seed", type=int, default=1)
    return p


def load(data: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict]:
    """(train arrays, test arrays, meta) as written by prepare.py."""
    meta = json.loads((data / "meta.json").read_text())
    train = dict(np.load(data / "train.npz"))
    test = dict(np.load(data / "test.npz"))
    return train, test, meta


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Clock:
    """Accumulates the seconds spent inside ``with clock.train():`` and the samples trained;
    ``extra`` holds more fields for the result (``flops_per_sample``, ``tool_version``)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.samples = 0
        self.extra: dict[str, object] = {}

    @contextmanager
    def train(self, samples: int):
        t0 = time.perf_counter()
        yield
        self.seconds += time.perf_counter() - t0
        self.samples += samples


def step_flops(step, samples: int) -> float:
    """FLOPs per training sample of ``step()`` (one forward + backward pass), as torch's
    FlopCounterMode counts them (matrix products; elementwise work is not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops() / samples


def write_result(
    out: Path,
    *,
    tool: str,
    args: argparse.Namespace,
    clock: Clock | None,
    predictions: np.ndarray | None,
    error: str | None = None,
    **extra: object,
) -> None:
    """OUT.json: tool, model, status (ok | crashed), error (one line), training seconds and
    samples, samples/s, peak RSS, the run's options; OUT.npy: test predictions."""
    out.parent.mkdir(parents=True, exist_ok=True)
    rate = clock.samples / clock.seconds if clock and clock.seconds else None
    record = {
        "tool": tool,
        "model": args.model,
        "status": "crashed" if error else "ok",
        "error": error,
        "train_seconds": clock.seconds if clock else None,
        "train_samples": clock.samples if clock else None,
        "samples_per_s": rate,
        "peak_rss_mb": peak_rss_mb(),
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        **extra,
    }
    if predictions is not None:
        np.save(out.with_suffix(".npy"), np.asarray(predictions, dtype=np.float64).reshape(-1))
    out.write_text(json.dumps(record, indent=2))


def one_line(exc: BaseException) -> str:
    """``Type: message (file:line)`` of the innermost frame: how a crashed peer is listed."""
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" ({Path(tb[-1].filename).name}:{tb[-1].lineno})" if tb else ""
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}{where}"


def run(main, tool: str, args: argparse.Namespace) -> None:
    """Call ``main(args, clock) -> predictions``; record a crash as a result instead of dying."""
    clock = Clock()
    try:
        preds = main(args, clock)
    except Exception as exc:  # a peer crashing is a result of the comparison
        write_result(args.out, tool=tool, args=args, clock=clock, predictions=None, error=one_line(exc))
        print(f"{tool} {args.model}: crashed: {one_line(exc)}", file=sys.stderr)
        return
    write_result(args.out, tool=tool, args=args, clock=clock, predictions=preds, **clock.extra)
    print(f"{tool} {args.model}: {clock.samples / max(clock.seconds, 1e-9):,.0f} samples/s", file=sys.stderr)
