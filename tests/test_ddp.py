"""One job on several processes: Lightning DDP on gloo through the real CLI, against one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, run_cli

from ctrbench.cli import other_rank_args
from ctrbench.engine import job, trainer_options  # noqa: F401  (registers the open trainer node)
from ctrbench.engine.data import CTRDataModule, IndexBatches, RankBatches
from ctrbench.engine.distributed import RESUME_ENV, launch_rank, sparse_refusal, unique_rows
from ctrbench.engine.selection import read_predictions, write_predictions
from ctrbench.metrics import evaluate

# 9758 training rows = 11 global batches of 887 + 1 row: every batch splits 444/443 (unequal loss
# weights) and the last one leaves rank 1 empty (a padding row of weight 0); 1202 validation rows =
# 1201 + 1 (rank 1 evaluates a padding row), 1204 test rows = 1201 + 3 (a 2/1 split).
BATCHES = ["batch_size=887", "eval_batch_size=1201"]
# base (PReLU): no per-rank batch statistics (Dice/BatchNorm would keep one running mean per rank)
SETUP = [*TINY, *BATCHES, "model=base", "trainer.max_epochs=2", "checkpoint=true", "trainer.accelerator=cpu"]
DDP = ["trainer.devices=2", "trainer.strategy=ddp"]
METRICS = ("auc", "gauc", "logloss")


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def _evaluate_checkpoint(cfg, path: Path) -> dict[str, dict[str, float]]:
    """The ordinary one-process evaluation of a checkpoint's weights (no trainer, no ranks)."""
    data = job.load_data(cfg)
    task, _ = job.build_task(cfg, data)
    task.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["state_dict"])
    task.eval()
    loaders = CTRDataModule(data, cfg.batch_size, cfg.eval_batch_size, seed=cfg.seed).val_dataloader()
    out = {}
    for split, loader in zip(("val", "test"), loaders, strict=True):
        labels, logits, groups = [], [], []
        with torch.no_grad():
            for batch in loader:
                labels.append(batch[data.schema.label].numpy())
                logits.append(task(batch).double().numpy())
                groups.append(batch[data.schema.group].numpy())
        label, logit, group = (np.concatenate(a) for a in (labels, logits, groups))
        out[split] = {**evaluate(label, logit, group), "logit": logit, "label": label}
    return out


@pytest.mark.cluster
def test_two_processes_train_and_evaluate_like_one(tmp_path: Path, compose_cfg) -> None:
    """``trainer.devices=2 trainer.strategy=ddp`` (gloo, two processes Lightning starts itself) against
    one process, same seed and global batch, sparse embedding tables (sparse all-reduce on gloo)."""
    args = [*SETUP, "optim.sparse=true"]
    one, two = tmp_path / "one", tmp_path / "two"
    done = run_cli([*args, f"hydra.run.dir={one}"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    done = run_cli([*args, *DDP, f"hydra.run.dir={two}"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    single = json.loads((one / "result.json").read_text())
    multi = json.loads((two / "result.json").read_text())
    assert multi["status"] == "ok" and multi["sparse_tables"] == 5
    assert multi["distributed"]["world_size"] == 2 and multi["distributed"]["backend"] == "gloo"
    assert multi["distributed"]["global_batch_size"] == 887
    assert multi["distributed"]["rank_batch_size"] == 444
    assert single["distributed"]["world_size"] == 1

    # written once, by rank 0: the same files as a one-process run (no second .hydra/, no rank-1 log)
    assert _files(two) == _files(one)
    assert ".hydra/config.yaml" in _files(two) and not list(two.glob("*ddp_process*"))

    # (a) the recorded metrics are the one-process evaluation of the selected weights
    cfg = compose_cfg(args)
    again = _evaluate_checkpoint(cfg, two / "checkpoints" / "best.ckpt")
    best = next(e for e in multi["epochs"] if e["epoch"] == multi["best_epoch"])
    for split in ("val", "test"):
        for m in METRICS:
            assert best[f"{split}_{m}"] == pytest.approx(again[split][m], abs=1e-6), (split, m)
    for m in METRICS:
        assert multi[f"test_{m}"] == pytest.approx(again["test"][m], abs=1e-6)
    kept = read_predictions(two / "predictions.npz")
    assert kept["test_row"].tolist() == list(range(1204)) and kept["val_row"].tolist() == list(range(1202))
    assert kept["test_label"].tolist() == again["test"]["label"].astype(int).tolist()
    prob = 1 / (1 + np.exp(-again["test"]["logit"]))
    assert np.abs(kept["test_prob"] - prob).max() < 1e-6

    # (b) the same curves as one process: the same global batches and the gradient of the same mean
    # loss, summed in another order (two float32 halves, then the all-reduce): a relative difference
    # of ~1e-7 per step that ~24 Adam steps carry into the weights; measured below 1e-6
    assert len(multi["epochs"]) == len(single["epochs"]) == 2
    for a, b in zip(single["epochs"], multi["epochs"], strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5)
        for key in ("val_auc", "val_gauc", "test_auc", "test_gauc", "val_logloss", "test_logloss"):
            assert b[key] == pytest.approx(a[key], abs=1e-4), key
    assert multi["best_epoch"] == single["best_epoch"]


def test_rank_batches_split_every_global_batch_and_replay_on_resume() -> None:
    """Every rank draws the same seeded batches; rank r takes rows r::W with weight W·n_r/n; an empty
    share is one row of the batch with weight 0; ``set_epoch`` replays the orders drawn before."""
    ranks = [RankBatches(IndexBatches(11, 4, shuffle=True, seed=3), r, 2) for r in range(2)]
    whole = [b.tolist() for b in IndexBatches(11, 4, shuffle=True, seed=3)]
    shares = [list(r) for r in ranks]
    assert len(shares[0]) == len(shares[1]) == len(whole) == 3
    for batch, (rows0, w0), (rows1, w1) in zip(whole, *shares, strict=True):
        assert sorted(rows0.tolist() + rows1.tolist()) == sorted(batch)
        assert (w0, w1) == (2 * len(rows0) / len(batch), 2 * len(rows1) / len(batch))
    assert [w for _, w in shares[0]] == [1.0, 1.0, 4 / 3]  # 11 = 4 + 4 + 3: the last splits 2/1
    last = RankBatches(IndexBatches(5, 4, shuffle=False), 1, 2)
    assert [(rows.tolist(), w) for rows, w in last] == [([1, 3], 1.0), ([4], 0.0)]  # padding: row 4, weight 0
    # resumed at epoch 2: the batches of the third epoch of an uninterrupted run
    straight = RankBatches(IndexBatches(11, 4, shuffle=True, seed=3), 1, 2)
    epochs = [[rows.tolist() for rows, _ in straight] for _ in range(3)]
    resumed = RankBatches(IndexBatches(11, 4, shuffle=True, seed=3), 1, 2)
    resumed.set_epoch(2)
    assert [rows.tolist() for rows, _ in resumed] == epochs[2]
    with pytest.raises(ValueError, match="rank 2 is outside a world of 2"):
        RankBatches(IndexBatches(4, 2, shuffle=False), 2, 2)


def test_gathered_predictions_are_ordered_by_row_without_padding(tmp_path: Path) -> None:
    rows = np.array([0, 2, 4, 1, 3, 4])  # rank 0: rows 0, 2, 4; rank 1: 1, 3 and padding row 4
    logit = np.array([0.0, 2.0, 4.0, 1.0, 3.0, 4.0])
    kept, ordered = unique_rows(rows, logit)
    assert kept.tolist() == [0, 1, 2, 3, 4] and ordered.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    write_predictions(
        tmp_path / "p.npz", 0, {"test": (np.ones(2), np.zeros(2), np.zeros(2), np.array([5, 9]))}
    )
    assert read_predictions(tmp_path / "p.npz")["test_row"].tolist() == [5, 9]


def test_launch_rank_reads_torchrun_slurm_and_lightning_variables() -> None:
    assert launch_rank({}) == 0
    assert launch_rank({"RANK": "1", "LOCAL_RANK": "0"}) == 1  # torchrun, second node
    assert launch_rank({"RANK": "0", "LOCAL_RANK": "0", "GROUP_RANK": "0"}) == 0
    assert launch_rank({"SLURM_NTASKS": "4", "SLURM_PROCID": "3"}) == 3  # srun, 4 tasks
    assert launch_rank({"SLURM_NTASKS": "1", "SLURM_PROCID": "0"}) == 0  # one Slurm job per sweep job
    assert launch_rank({"LOCAL_RANK": "1", "NODE_RANK": "0", "WORLD_SIZE": "2"}) == 1  # Lightning's child
    assert launch_rank({"NODE_RANK": "1"}) == 1  # Lightning's launcher on a second node


def test_other_ranks_write_no_hydra_copy_no_log_file_and_no_summary() -> None:
    lightning_child = ["model=base", "hydra.run.dir=out", "hydra.output_subdir=null"]
    assert other_rank_args(lightning_child) == [
        *lightning_child,
        "hydra/job_logging=stdout",
        "~hydra.callbacks.summary",
    ]
    assert other_rank_args(["hydra/job_logging=none"]) == [
        "hydra/job_logging=none",
        "hydra.output_subdir=null",
        "~hydra.callbacks.summary",
    ]


def test_sparse_tables_are_refused_before_training_where_the_backend_cannot_reduce_them(
    tmp_path: Path, compose_cfg, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NCCL has no sparse all-reduce: a multi-GPU job with sparse tables fails in one line, recorded,
    before a process is started or a batch trained (gloo reduces them: the test above trains on it)."""
    assert sparse_refusal(3, 2, "gloo") is None and sparse_refusal(3, 1, "nccl") is None
    assert sparse_refusal(0, 2, "nccl") is None
    monkeypatch.setattr(job, "process_group_backend", lambda trainer: "nccl")
    cfg = compose_cfg([*SETUP, *DDP, "optim.sparse=true"])
    record = job.run(cfg, tmp_path)
    assert record["status"] == "failed"
    assert record["error"] == (
        "ValueError: 5 embedding table(s) have sparse gradients (optim.sparse), which DDP cannot "
        "all-reduce on the nccl backend of a 2-process job: set optim.sparse=false, or train on gloo "
        "(trainer.accelerator=cpu)"
    )
    assert not (tmp_path / "checkpoints").exists() and not record.get("epochs")
    assert json.loads((tmp_path / "result.json").read_text())["status"] == "failed"


def test_spawning_strategies_are_refused_before_training(tmp_path: Path, compose_cfg) -> None:
    """ddp_spawn hands back rank 0's weights only, never the task's history: one line, recorded."""
    record = job.run(compose_cfg([*SETUP, "trainer.devices=2", "trainer.strategy=ddp_spawn"]), tmp_path)
    assert record["status"] == "failed"
    assert record["error"].startswith(
        "ValueError: trainer.strategy=ddp_spawn trains in worker processes whose per-epoch results never "
        "reach the job's record: use trainer.strategy=ddp"
    )
    assert not (tmp_path / "checkpoints").exists()


def test_other_ranks_resume_from_what_rank_0_chose(
    tmp_path: Path, compose_cfg, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process Lightning starts for rank 0 takes rank 0's choice from the environment (even where the
    folder alone would say otherwise); without it (torchrun, srun) the folder rule decides."""
    cfg = compose_cfg([*SETUP, *DDP])
    chosen = tmp_path / "checkpoints" / "last.ckpt"
    monkeypatch.setenv(RESUME_ENV, str(chosen))
    assert job._rank_resume(cfg, tmp_path, {}) == chosen
    monkeypatch.setenv(RESUME_ENV, "")
    assert job._rank_resume(cfg, tmp_path, {}) is None
    monkeypatch.delenv(RESUME_ENV)
    assert job._rank_resume(cfg, tmp_path, {}) is None  # an empty folder: a fresh start, as rank 0's


# one of two gloo processes (torch and ctrbench.engine.distributed only: a quick start): gathers
# unequal shares, then compares a value that is equal, then one that differs
TWO_RANKS = """
import json, sys
import torch, torch.distributed as dist
from ctrbench.engine.distributed import gather, same_everywhere

rank, port = int(sys.argv[1]), sys.argv[2]
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
rows = torch.arange(rank, 5, 2)  # rank 0: 0, 2, 4; rank 1: 1, 3
got = [t.tolist() for t in gather([rows, rows.double() / 2, rows % 2 == 0])]
same_everywhere("last.ckpt", "the checkpoint")
try:
    same_everywhere("last.ckpt" if rank == 0 else "", "the checkpoint to resume from")
    error = None
except RuntimeError as exc:
    error = str(exc)
dist.destroy_process_group()
print(json.dumps({"rows": got, "error": error}))
"""


@pytest.mark.cluster
def test_gather_and_agreement_over_a_real_two_process_group() -> None:
    from test_torchrun import _free_port

    port = str(_free_port())
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", TWO_RANKS, str(r), port], stdout=subprocess.PIPE, text=True, env=env
        )
        for r in (0, 1)
    ]
    try:
        outputs = [json.loads(p.communicate(timeout=120)[0].strip().splitlines()[-1]) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    expected = [[0, 2, 4, 1, 3], [0.0, 1.0, 2.0, 0.5, 1.5], [True, True, True, False, False]]
    assert outputs[0]["rows"] == outputs[1]["rows"] == expected  # rank order, unequal lengths, bool kept
    assert outputs[0]["error"].startswith(
        "the ranks of this job disagree on the checkpoint to resume from (rank 0: "
    )
    assert "ranks [1] differ from rank 0" in outputs[1]["error"]
