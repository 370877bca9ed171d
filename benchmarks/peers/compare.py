"""ctrbench next to a plain-PyTorch loop, DeepCTR-Torch and FuxiCTR on the same data, side by side.

    python benchmarks/peers/prepare.py --root ../shared/data/ml-100k          # once: the arrays
    bash benchmarks/peers/setup_deepctr.sh; bash benchmarks/peers/setup_fuxictr.sh   # once: peer venvs
    python benchmarks/peers/compare.py --root ../shared/data/ml-100k --fuxictr-repo PATH [--passes 3]

Every entrant trains one epoch (``--epochs``) of MovieLens-100K under the DIN protocol (embedding
16 per feature, attention 80-40, MLP 200-80, batch 256, Adam 1e-3, PReLU) in its own process with
``--threads`` threads; passes run the entrants in rotated order, so that a noisy machine hits them
all alike. ctrbench runs its real command line (Lightning, data module, metrics); its samples/s
is the wall time of the training loop (batch loading included, evaluation excluded). The peers'
runners time their own training steps (see each runner). Test AUC / GAUC of every entrant are
computed here from its predictions with ctrbench's metric code. GFLOP/s = the FLOPs one training
step of that entrant executes (torch's FlopCounterMode, matrix products) × samples/s. Peer
configurations that crash are listed as such. "ctrbench ÷ this" is the median over passes of
the per-pass ratio (one per ctrbench variant of that model: DIEN with the official MLP auxiliary
head and with the paper's inner product). Prints a rich table and writes ``compare.json`` and
``compare.md`` under ``--out`` (``--render FILE`` re-renders a saved ``compare.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from prepare import PROTOCOL
from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

# ctrbench's options for the comparison's dimensions (see peer_io); DIEN as FuxiCTR's: GRU width =
# behaviour width (32), the official MLP attention with softmax; the auxiliary loss averaged over
# valid steps, as the plain loop (run_plain.py) computes it, so that the AUC columns compare alike
DATASET = PROTOCOL  # the split prepare.py exported, rebuilt by ctrbench's own loader
DIEN = {
    "emb_dim": 16,
    "hidden": 32,
    "att_form": "mlp",
    "att_mlp": [80, 40],
    "mlp": [200, 80],
    "aux_norm": "step_mean",
}
CTRBENCH_MODELS = {
    "din": ("din", {"emb_dim": 16, "att_features": "official", "att_mlp": [80, 40], "mlp": [200, 80]}),
    "dien": ("dien", {**DIEN, "aux_head": "mlp"}),
    "dien (inner aux)": ("dien", {**DIEN, "aux_head": "inner"}),
}


@dataclass
class Entrant:
    tool: str
    model: str  # din | dien | dien (inner aux)
    note: str
    command: list[str]
    result: Path
    label: str = ""  # ctrbench: the CTRBENCH_MODELS entry
    passes: list[dict] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.tool} {self.model} {self.note}".strip()


def override(value: object) -> str:
    return "[" + ",".join(map(str, value)) + "]" if isinstance(value, list) else str(value)


def ctrbench_entrant(label: str, args, out: Path) -> Entrant:
    name, options = CTRBENCH_MODELS[label]
    run_dir = out / f"ctrbench_{label.replace(' ', '_').replace('(', '').replace(')', '')}"
    cmd = [
        sys.executable, "-m", "ctrbench", f"model={name}", "dataset=movielens", "act=prelu",
        f"dataset.root={Path(args.root).resolve()}", *(f"dataset.{k}={v}" for k, v in DATASET.items()),
        *(f"model.{k}={override(v)}" for k, v in options.items()),
        "batch_size=256", f"trainer.max_epochs={args.epochs}", "checkpoint=false", "logger=none",
        "seed=1", "resume=false", f"hydra.run.dir={run_dir}",
    ]  # fmt: skip
    note = "aux: official MLP head" if options.get("aux_head") == "mlp" else ""
    note = "aux: paper's inner product" if options.get("aux_head") == "inner" else note
    return Entrant("ctrbench", label.split()[0], note, cmd, run_dir / "result.json", label)


def peer_entrants(args, out: Path) -> list[Entrant]:
    common = ["--data", str(args.data), "--epochs", str(args.epochs), "--threads", str(args.threads)]
    found: list[Entrant] = []
    venvs = {
        "plain PyTorch": (Path(sys.executable), HERE / "run_plain.py", []),
        "DeepCTR-Torch": (HERE / ".venv-deepctr" / "bin" / "python", HERE / "run_deepctr.py", []),
        "FuxiCTR": (
            HERE / ".venv-fuxictr" / "bin" / "python",
            HERE / "run_fuxictr.py",
            ["--fuxictr-repo", str(args.fuxictr_repo or "")],
        ),
    }
    variants = {  # (model, note, extra runner options)
        "plain PyTorch": [("din", "", []), ("dien", "aux: official MLP head", [])],
        "DeepCTR-Torch": [
            ("din", "", []),
            ("dien", "aux: negative sampling", []),
            ("din", "Dice", ["--activation", "dice"]),
        ],
        "FuxiCTR": [("din", "", []), ("dien", "no aux", []), ("dien", "aux on", ["--aux"])],
    }  # fmt: skip
    for tool, (python, runner, extra) in venvs.items():
        if not python.exists():
            print(f"skipping {tool}: {python} is missing (run its setup script)", file=sys.stderr)
            continue
        if tool == "FuxiCTR" and not args.fuxictr_repo:
            print("skipping FuxiCTR: --fuxictr-repo is not given", file=sys.stderr)
            continue
        for model, note, options in variants[tool]:
            slug = f"{tool}_{model}_{note}".replace(" ", "_").replace(":", "")
            result = out / f"{slug}.json"
            cmd = [
                str(python),
                str(runner),
                "--model",
                model,
                "--out",
                str(result),
                *common,
                *extra,
                *options,
            ]
            found.append(Entrant(tool, model, note, cmd, result))
    return found


def run(entrant: Entrant, threads: int) -> dict:
    """Run one pass; returns its record with the process's peak RSS (MiB)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), WANDB_MODE="disabled")
    entrant.result.unlink(missing_ok=True)
    started = time.perf_counter()
    proc = subprocess.Popen(
        entrant.command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(proc.pid, 0)
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    wall = time.perf_counter() - started
    if not entrant.result.exists():
        tail = stderr.strip().splitlines()[-1:] or ["no output"]
        return {
            "status": "failed",
            "error": f"exit {os.waitstatus_to_exitcode(status)}: {tail[0]}",
            "wall_s": wall,
        }
    record = json.loads(entrant.result.read_text())
    record["peak_rss_mb"] = usage.ru_maxrss / 1024
    record["wall_s"] = wall
    return record


def scores(entrant: Entrant, record: dict, test: dict) -> dict:
    """samples/s, AUC, GAUC (and ctrbench's evaluation share) of one pass."""
    from ctrbench.metrics import evaluate

    if entrant.tool == "ctrbench":
        if record.get("status") != "ok":
            return {"status": "failed", "error": record.get("error")}
        last = record["epochs"][-1]
        train_s = record["train_loop_s"]
        return {
            "status": "ok",
            "samples_per_s": record["samples_per_s"],
            "auc": last["test_auc"],
            "gauc": last["test_gauc"],
            "eval_share": record["eval_s"] / train_s if train_s else None,
            "peak_rss_mb": record["peak_rss_mb"],
        }
    if record.get("status") != "ok":
        return {"status": "crashed", "error": record.get("error")}
    probs = np.load(entrant.result.with_suffix(".npy")).clip(1e-7, 1 - 1e-7)
    metrics = evaluate(test["label"], np.log(probs / (1 - probs)), test["user"])
    return {
        "status": "ok",
        "samples_per_s": record["samples_per_s"],
        "auc": metrics["auc"],
        "gauc": metrics["gauc"],
        "flops_per_sample": record.get("flops_per_sample"),
        "peak_rss_mb": record["peak_rss_mb"],
    }


def ctrbench_flops(label: str, args) -> float:
    """FLOPs per sample of one ctrbench training step (CTRTask.training_step + backward)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ctrbench import registry
    from ctrbench.engine.data import CTRDataModule
    from ctrbench.engine.task import CTRTask

    data = registry.build("dataset", "movielens", {"root": str(Path(args.root).resolve()), **DATASET}).load()
    name, options = CTRBENCH_MODELS[label]
    torch.manual_seed(0)
    act = registry.build("act", "prelu", {})
    model = registry.build("model", name, options, schema=data.schema, activation=act)
    task = CTRTask(model, data.schema)
    batch = next(iter(CTRDataModule(data, 256, 4096, seed=0).train_dataloader()))
    with FlopCounterMode(display=False) as counter:
        task.training_step(batch, 0).backward()
    return counter.get_total_flops() / len(batch["label"])


def summarize(entrants: list[Entrant], flops: dict[str, float], test: dict) -> list[dict]:
    rows = []
    for e in entrants:
        passes = [scores(e, p, test) for p in e.passes]
        ok = [p for p in passes if p["status"] == "ok"]
        row = {"tool": e.tool, "model": e.model, "note": e.note, "passes": passes}
        if not ok:
            row.update(
                status=passes[-1]["status"] if passes else "not run",
                error=passes[-1].get("error") if passes else None,
            )
            rows.append(row)
            continue
        rates = [p["samples_per_s"] for p in ok]
        per_sample = flops.get(e.key) or ok[-1].get("flops_per_sample")
        row.update(
            status="ok",
            samples_per_s=statistics.median(rates),
            samples_per_s_range=[min(rates), max(rates)],
            gflops=statistics.median(rates) * per_sample / 1e9 if per_sample else None,
            flops_per_sample=per_sample,
            auc=ok[-1]["auc"],
            gauc=ok[-1]["gauc"],
            peak_rss_mb=max(p["peak_rss_mb"] for p in ok),
            eval_share=ok[-1].get("eval_share"),
        )
        rows.append(row)
    return rows


def pass_ratio(ours: dict, theirs: dict) -> float | None:
    """Median over passes of ours ÷ theirs, each pass's two runs taken close in time (the
    machine's speed drifts between passes); None without a pass where both ran."""
    pairs = [
        a["samples_per_s"] / b["samples_per_s"]
        for a, b in zip(ours["passes"], theirs["passes"], strict=False)
        if a.get("status") == "ok" and b.get("status") == "ok"
    ]
    return statistics.median(pairs) if pairs else None


def ratios(row: dict, rows: list[dict]) -> str:
    """'ctrbench ÷ this' for a peer row: one ratio per ctrbench variant of the same model."""
    cells = []
    for ours in rows:
        if ours["tool"] != "ctrbench" or ours["model"] != row["model"] or ours["status"] != "ok":
            continue
        ratio = pass_ratio(ours, row)
        if ratio is not None:
            head = " (inner aux)" if ours["note"].startswith("aux: paper") else ""
            cells.append(f"{ratio:.2f}×{head}")
    return " · ".join(cells)


def render(rows: list[dict], args) -> tuple[Table, str]:
    title = (
        f"MovieLens-100K, DIN protocol, {args.epochs} epoch(s), batch 256, {args.threads} CPU threads, "
        f"median of {args.passes} passes"
    )
    table = Table(title=title)
    cols = ["tool", "model", "samples/s", "GFLOP/s", "test AUC", "test GAUC", "peak RSS", "ctrbench ÷ this"]
    for c in cols:
        table.add_column(c, justify="left" if c in ("tool", "model") else "right")
    md = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        model = f"{r['model']} ({r['note']})" if r["note"] else r["model"]
        if r["status"] != "ok":
            cells = [r["tool"], model, r["status"], "", "", "", "", r.get("error") or ""]
        else:
            lo, hi = r["samples_per_s_range"]
            ratio = ratios(r, rows) if r["tool"] != "ctrbench" else ""
            cells = [
                r["tool"], model, f"{r['samples_per_s']:,.0f} ({lo:,.0f}–{hi:,.0f})",
                f"{r['gflops']:.1f}" if r["gflops"] else "", f"{r['auc']:.4f}", f"{r['gauc']:.4f}",
                f"{r['peak_rss_mb']:,.0f} MB", ratio,
            ]  # fmt: skip
        table.add_row(*cells)
        md.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return table, "\n".join(md) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", required=True, help="MovieLens-100K raw files (for ctrbench's own loader)")
    parser.add_argument("--data", type=Path, default=HERE / "data", help="arrays written by prepare.py")
    parser.add_argument("--fuxictr-repo", default=os.environ.get("FUXICTR_REPO", ""))
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=HERE / "out")
    parser.add_argument("--only", default="", help="comma-separated substrings of entrant names to keep")
    parser.add_argument("--render", type=Path, help="only re-render the table of this compare.json")
    args = parser.parse_args()
    if args.render:
        saved = json.loads(args.render.read_text())
        args.epochs, args.threads = int(saved["options"]["epochs"]), int(saved["options"]["threads"])
        args.passes = int(saved["options"]["passes"])
        table, md = render(saved["rows"], args)
        Console(width=200).print(table)
        args.render.with_suffix(".md").write_text(md)
        return
    if not (args.data / "meta.json").exists():
        sys.exit(
            f"{args.data} holds no prepared arrays: run benchmarks/peers/prepare.py --root {args.root} first"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    entrants = [ctrbench_entrant(label, args, args.out) for label in CTRBENCH_MODELS] + peer_entrants(
        args, args.out
    )
    if args.only:
        keep = [s.strip().lower() for s in args.only.split(",")]
        entrants = [e for e in entrants if any(k in e.key.lower() for k in keep)]
    for p in range(args.passes):
        shift = p % len(entrants)
        for e in entrants[shift:] + entrants[:shift]:
            record = run(e, args.threads)
            e.passes.append(record)
            rate = record.get("samples_per_s")
            print(
                f"pass {p + 1}: {e.key}: {f'{rate:,.0f} samples/s' if rate else record.get('error')}",
                file=sys.stderr,
            )
    flops = {e.key: ctrbench_flops(e.label, args) for e in entrants if e.tool == "ctrbench"}
    test = dict(np.load(args.data / "test.npz"))
    rows = summarize(entrants, flops, test)
    table, md = render(rows, args)
    Console(width=200).print(table)
    (args.out / "compare.json").write_text(
        json.dumps({"options": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=2)
    )
    (args.out / "compare.md").write_text(md)
    print(f"wrote {args.out / 'compare.json'} and {args.out / 'compare.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
