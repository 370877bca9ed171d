"""Memory of parallel sweep workers on one machine, and batch building from the cache's maps.

    python benchmarks/memory.py [--users 210000] [--jobs 4] [--batches 300] [--cache DIR] [--out DIR]
                                [--skip-sweeps] [--skip-batches] [--code DIR]

**Sweeps.** Builds (once, timed) ``dataset=synthetic`` with ``--users`` users (210,000 give about
10.6 million training rows) into ``--cache``, then runs three real CPU sweeps with
``hydra/launcher=gpus`` (joblib/loky worker processes), each job ``model=lr`` for ``--batches``
batches of ``--batch-size`` rows (random batches touch every page of the training arrays):

* ``reference``: one job on a tiny synthetic dataset (``--ref-users``) — a worker's memory without
  data (Python, torch, Lightning, the model, the training loop);
* ``1 worker``: one job on the big dataset (both with ``n_jobs=2``, so that the job runs in a loky
  worker like the others: joblib runs ``n_jobs=1`` in the launching process);
* ``N workers``: ``hydra.launcher.n_jobs=N``, N jobs (seeds 1..N) on the big dataset at once.

While they run, every ``--interval`` seconds each worker's ``/proc/<pid>/smaps_rollup`` (Pss, Pss_Anon)
and ``/proc/<pid>/smaps`` (the mappings of files under the cache folder) are read. Per worker:

* ``pss``: its proportional set size (a page shared by k processes counts 1/k in each);
* ``cache``: Pss of its maps of the cache files — shared page-cache pages divided among the processes
  mapping them, plus the pages it made private by writing them (copy-on-write);
* ``anon``: Pss_Anon minus those private cache pages (heap, torch's allocations, ...);
* **data memory** = ``cache`` + max(0, ``anon`` − the reference worker's peak ``anon``): the mapped
  dataset plus whatever heap grows beyond a worker that trains the same job without data.

Reported per run: the peak over sampling rounds (once every worker's mapped pages have settled) of the
workers' summed Pss and summed data memory; the goal is
summed data memory of N workers ≤ 1.3 × one worker's. ``--code DIR`` runs the sweeps with another
checkout first on ``PYTHONPATH`` (e.g. an older version, for a before/after comparison); the cache
folder then goes through ``$CTRBENCH_CACHE``.

**Batch building.** Random batches (``--sizes``, histories as DIN/DIEN read them: every sequence
field of the schema gathered and padded) from :class:`~ctrbench.engine.batches.ArrayBatches` over
in-heap copies of the training arrays vs over the cache's maps, same index vectors, interleaved
rounds (alternating which goes first) after both are resident; prints the median time per batch and
the median over rounds of the ratio maps / heap.

Not a test: numbers depend on the machine (and on what else runs on it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
console = Console(width=150)


# ---- /proc ---------------------------------------------------------------------------------------
def children_of(root: int) -> list[int]:
    """Every live descendant of process ``root``."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        parent[int(entry)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        kids = [p for p, pp in parent.items() if pp == pid]
        out += kids
        todo += kids
    return out


def rollup(pid: int) -> dict[str, int]:
    """kB fields of /proc/<pid>/smaps_rollup (Pss, Pss_Anon, Rss, ...)."""
    out = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        out[key] = int(value.split()[0])
    return out


def cache_maps(pid: int, folder: str) -> dict[str, int]:
    """Pss, Rss and Anonymous (private copy-on-write pages), kB, of the maps of files under ``folder``."""
    out = {"Pss": 0, "Rss": 0, "Anonymous": 0}
    inside = False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            parts = line.split(maxsplit=5)
            if "-" in parts[0] and not parts[0].endswith(":"):
                inside = len(parts) == 6 and parts[5].startswith(folder)
            elif inside:
                key = parts[0].rstrip(":")
                if key in out:
                    out[key] += int(parts[1])
    return out


@dataclass
class Sample:
    t: float
    pss: int  # kB
    cache: int
    cache_rss: int
    anon: int


@dataclass
class Watch:
    """Samples the memory of a process tree's workers (the descendants that map cache files)."""

    root: int
    folder: str
    interval: float
    samples: dict[int, list[Sample]] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        t0 = time.perf_counter()
        while not self.stop.is_set():
            now = time.perf_counter() - t0  # one time stamp per round: the round is summed as a whole
            for pid in [self.root, *children_of(self.root)]:
                try:
                    r = rollup(pid)
                    c = cache_maps(pid, self.folder)
                except (OSError, ValueError, IndexError):
                    continue  # gone meanwhile
                if c["Rss"] == 0 and pid not in self.samples:
                    continue  # not (yet) a worker holding the data
                anon = r.get("Pss_Anon", 0) - c["Anonymous"]
                s = Sample(now, r["Pss"], c["Pss"], c["Rss"], anon)
                self.samples.setdefault(pid, []).append(s)
            self.stop.wait(self.interval)


# ---- sweeps --------------------------------------------------------------------------------------
def sweep_command(args: argparse.Namespace, users: int, jobs: int, out: Path) -> list[str]:
    """The sweep: ``jobs`` jobs at once; a single job gets ``n_jobs=2`` so that it too runs in a loky
    worker process (joblib runs ``n_jobs=1`` in the launching process), the other worker idles."""
    seeds = ",".join(str(s) for s in range(1, jobs + 1))
    cache = [] if args.code else [f"dataset.cache_dir={args.cache}"]
    return [
        sys.executable,
        "-m",
        "ctrbench",
        "-m",
        "hydra/launcher=gpus",
        f"hydra.launcher.n_jobs={max(jobs, 2)}",
        f"dataset.n_users={users}",
        *cache,
        "model=lr",
        "reg=none",
        f"seed={seeds}",
        f"batch_size={args.batch_size}",
        "eval_batch_size=4096",
        "trainer.max_epochs=1",
        f"trainer.limit_train_batches={args.batches}",
        f"trainer.limit_val_batches={args.val_batches}",
        "trainer.enable_progress_bar=false",
        "checkpoint=false",
        "logger=none",
        "resume=false",
        f"hydra.sweep.dir={out}",
    ]


def environment(args: argparse.Namespace) -> dict[str, str]:
    env = dict(os.environ, WANDB_MODE="disabled", PYTHONWARNINGS="ignore", CTRBENCH_CACHE=str(args.cache))
    if args.code:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (args.code, env.get("PYTHONPATH", "")) if p)
    return env


@dataclass
class Run:
    name: str
    command: list[str]
    samples: dict[int, list[Sample]]
    wall: float
    records: list[dict]


def run_sweep(args: argparse.Namespace, name: str, users: int, jobs: int) -> Run:
    out = args.out / name.replace(" ", "_")
    command = sweep_command(args, users, jobs, out)
    console.print(f"[bold]{name}[/bold]: {shlex.join(command)}")
    started = time.perf_counter()
    log = open(args.out / f"{name.replace(' ', '_')}.log", "w")
    # cwd outside the checkout: `python -m` puts the cwd first on sys.path, before --code
    proc = subprocess.Popen(
        command, cwd=args.out, env=environment(args), stdout=log, stderr=subprocess.STDOUT
    )
    watch = Watch(proc.pid, str(Path(args.cache).resolve()), args.interval)
    thread = threading.Thread(target=watch.run, daemon=True)
    thread.start()
    code = proc.wait()
    watch.stop.set()
    thread.join()
    log.close()
    samples = {pid: [dataclasses.asdict(s) for s in ss] for pid, ss in watch.samples.items()}
    (args.out / f"{name.replace(' ', '_')}.samples.json").write_text(json.dumps(samples))
    records = [json.loads(p.read_text()) for p in sorted(out.glob("*/result.json"))]
    bad = [r.get("error") for r in records if r.get("status") != "ok"]
    if code != 0 or len(records) != jobs or bad:
        raise SystemExit(f"{name}: sweep exit {code}, {len(records)} records, errors {bad}; see {log.name}")
    return Run(name, command, watch.samples, time.perf_counter() - started, records)


def summed_peak(run: Run, value: Callable[[Sample], float]) -> tuple[float, list[Sample]]:
    """Peak over sampling rounds of the workers' summed ``value``, and the samples of that round.

    The workers of a round are read one after the other, so while one is still mapping new pages the
    others' Pss of those pages is not yet divided: such rounds are left out (when any other is left),
    and a page mapped by every worker counts once in the sum."""
    rounds: dict[float, list[Sample]] = {}
    unsettled: set[float] = set()  # a worker still mapping new pages: its Pss and the others' disagree
    for ss in run.samples.values():
        for before, s in zip([None, *ss], ss, strict=False):
            rounds.setdefault(s.t, []).append(s)
            if before is None or abs(s.cache_rss - before.cache_rss) > 0.01 * max(s.cache_rss, 1):
                unsettled.add(s.t)
    settled = [now for t, now in rounds.items() if t not in unsettled] or list(rounds.values())
    best, at = 0.0, []
    for now in settled:
        total = sum(value(s) for s in now)
        if total > best:
            best, at = total, now
    return best, at


def prebuild(args: argparse.Namespace) -> float:
    """Build the big dataset's cache once (a separate process), seconds."""
    code = (
        "import sys; from ctrbench.datasets.synthetic import SyntheticConfig, SyntheticDataset as D; "
        f"d = D(SyntheticConfig(n_users={args.users}, cache_dir={str(args.cache)!r})).load(); "
        "print(len(d.train), len(d.val), len(d.test), d.info.get('build_seconds', 0.0))"
    )
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], env=environment(args), capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    train, val, test, build = done.stdout.split()[-4:]
    console.print(
        f"synthetic n_users={args.users}: {int(train):,} train / {int(val):,} val / {int(test):,} test rows; "
        f"build {float(build):.1f} s (0 = already cached), load {time.perf_counter() - t0:.1f} s"
    )
    return float(build)


def sweeps(args: argparse.Namespace) -> None:
    prebuild(args)
    ref = run_sweep(args, "reference", args.ref_users, 1)
    anon_ref = max(s.anon for ss in ref.samples.values() for s in ss)
    one = run_sweep(args, "1 worker", args.users, 1)
    many = run_sweep(args, f"{args.jobs} workers", args.users, args.jobs)
    table = Table(title=f"worker memory (MiB), dataset=synthetic n_users={args.users}, model=lr")
    for col in (
        "run",
        "workers",
        "Σ Pss",
        "Σ data",
        "Σ cache maps",
        "Σ heap growth",
        "cache Rss/worker",
        "wall s",
    ):
        table.add_column(col, justify="left" if col == "run" else "right")
    rows = {}
    for run in (ref, one, many):

        def data(s: Sample) -> float:
            return s.cache + max(0, s.anon - anon_ref)

        total, at = summed_peak(run, data)
        pss, _ = summed_peak(run, lambda s: s.pss)
        rows[run.name] = {"data": total / 1024, "pss": pss / 1024}
        table.add_row(
            run.name,
            str(len(run.samples)),
            f"{pss / 1024:,.0f}",
            f"{total / 1024:,.0f}",
            f"{sum(s.cache for s in at) / 1024:,.0f}",
            f"{sum(max(0, s.anon - anon_ref) for s in at) / 1024:,.0f}",
            f"{max((s.cache_rss for s in at), default=0) / 1024:,.0f}",
            f"{run.wall:.0f}",
        )
    console.print(table)
    console.print(
        f"reference worker's peak anon Pss (subtracted as a worker's own memory): {anon_ref / 1024:,.0f} MiB"
    )
    a, b = rows["1 worker"], rows[many.name]
    console.print(
        f"[bold]{args.jobs} workers / 1 worker: Σ data memory {b['data'] / a['data']:.2f}× "
        f"(goal ≤ 1.3×), Σ Pss {b['pss'] / a['pss']:.2f}×[/bold]"
    )
    pids = sorted({r["placement"]["pid"] for r in many.records if "placement" in r})
    console.print(f"{args.jobs}-worker sweep: jobs ran in processes {pids}; commands above (cwd {args.out})")


# ---- batch building ------------------------------------------------------------------------------
def batch_building(args: argparse.Namespace) -> None:
    import torch

    from ctrbench.datasets.synthetic import SyntheticConfig, SyntheticDataset
    from ctrbench.engine.batches import ArrayBatches
    from ctrbench.schema import Sequences, Split

    torch.set_num_threads(1)
    data = SyntheticDataset(SyntheticConfig(n_users=args.users, cache_dir=str(args.cache))).load()
    mapped = data.train
    heap = Split(
        {k: np.array(v) for k, v in mapped.columns.items()},
        seq=np.array(mapped.seq),
        end=np.array(mapped.end),
    )
    heap_seqs = Sequences(
        np.array(data.sequences.offsets), {k: np.array(v) for k, v in data.sequences.columns.items()}
    )
    for array in [*mapped.columns.values(), mapped.seq, mapped.end, *data.sequences.columns.values()]:
        np.add.reduce(array, dtype=np.float64)  # resident: both sides measured warm
    kinds = {
        "heap": ArrayBatches(heap, data.schema, heap_seqs),
        "maps": ArrayBatches(mapped, data.schema, data.sequences),
    }
    n = len(mapped)
    table = Table(title=f"ArrayBatches over {n:,} training rows: µs per random batch (median), 1 thread")
    for col in ("batch", "heap", "maps", "maps / heap (median of paired rounds)"):
        table.add_column(col, justify="right")
    generator = torch.Generator().manual_seed(0)
    for size in args.sizes:
        times: dict[str, list[float]] = {k: [] for k in kinds}
        for r in range(args.rounds):
            idx = [torch.randint(0, n, (size,), generator=generator) for _ in range(args.per_round)]
            order = list(kinds) if r % 2 == 0 else list(reversed(kinds))
            for kind in order:
                batches = kinds[kind]
                t0 = time.perf_counter()
                for i in idx:
                    batches[i]
                times[kind].append((time.perf_counter() - t0) / len(idx) * 1e6)
        heap_us, maps_us = statistics.median(times["heap"]), statistics.median(times["maps"])
        paired = statistics.median(m / h for m, h in zip(times["maps"], times["heap"], strict=True))
        table.add_row(str(size), f"{heap_us:,.0f}", f"{maps_us:,.0f}", f"{paired:.3f}")
    console.print(table)
    r = rollup(os.getpid())
    console.print(
        f"huge pages: heap copies {r.get('AnonHugePages', 0) / 1024:,.0f} MiB (transparent huge pages), "
        f"cache maps {r.get('FilePmdMapped', 0) / 1024:,.0f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=210_000)
    parser.add_argument("--ref-users", type=int, default=2_000)
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--val-batches", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/ctrbench-memory-bench/cache"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/ctrbench-memory-bench/runs"))
    parser.add_argument("--code", default="", help="a checkout to run the sweeps with (PYTHONPATH)")
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[256, 1024])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--per-round", type=int, default=50)
    parser.add_argument("--skip-sweeps", action="store_true")
    parser.add_argument("--skip-batches", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    console.print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    if not args.skip_sweeps:
        sweeps(args)
    if not args.skip_batches:
        batch_building(args)


if __name__ == "__main__":
    main()
