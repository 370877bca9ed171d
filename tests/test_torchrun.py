"""Two ``torchrun`` launches on this machine act as two nodes of one job (gloo over 127.0.0.1)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY
from test_ddp import BATCHES, METRICS, _evaluate_checkpoint, _files

from ctrbench.engine import trainer_options  # noqa: F401  (registers the open trainer node)

TORCHRUN = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
ARGS = [
    *TINY,
    *BATCHES,
    "model=base",
    "trainer.max_epochs=1",
    "checkpoint=true",
    "trainer.accelerator=cpu",
    "trainer.num_nodes=2",
    "trainer.devices=1",
    "trainer.strategy=ddp",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.cluster
@pytest.mark.skipif(not Path(TORCHRUN).exists(), reason="torchrun is not installed")
def test_two_torchrun_nodes_train_one_job_written_once(tmp_path: Path, compose_cfg) -> None:
    out = tmp_path / "job"
    port = _free_port()
    # one thread per process: the two "nodes" share this machine's cores
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="disabled", PYTHONWARNINGS="ignore")
    procs: list[subprocess.Popen] = []
    try:
        for node in (0, 1):
            command = [
                TORCHRUN,
                "--nnodes=2",
                "--nproc-per-node=1",
                f"--node-rank={node}",
                "--master-addr=127.0.0.1",
                f"--master-port={port}",
                "-m",
                "ctrbench",
                *ARGS,
                f"hydra.run.dir={out}",
            ]
            with (tmp_path / f"node{node}.log").open("w") as log:  # the child keeps its own handle
                procs.append(
                    subprocess.Popen(
                        command,
                        cwd=tmp_path,
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        codes = [p.wait(timeout=240) for p in procs]
    finally:
        for p in procs:  # each agent and its worker are one process group
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    logs = [(tmp_path / f"node{n}.log").read_text() for n in (0, 1)]
    assert codes == [0, 0], "\n".join(log[-3000:] for log in logs)
    record = json.loads((out / "result.json").read_text())
    assert record["status"] == "ok", record["error"]
    dist = record["distributed"]
    assert (dist["world_size"], dist["num_nodes"], dist["processes_per_node"]) == (2, 2, 1)
    assert dist["cluster_environment"] == "TorchElasticEnvironment" and dist["backend"] == "gloo"
    assert record["placement"]["distributed"]["rank"] == "0"  # written by global rank 0
    # written once: rank 1 left no log file, no .hydra/ copy of its own, no summary of its own
    assert _files(out) >= {"result.json", "predictions.npz", "checkpoints/best.ckpt", ".hydra/config.yaml"}
    assert not [f for f in _files(out) if f.endswith(".log") and f != "ctrbench.log"]
    assert "Initializing distributed: GLOBAL_RANK: 1" in logs[1] and "summary" not in logs[1]
    # the metrics are over the whole split: the one-process evaluation of the kept weights
    again = _evaluate_checkpoint(compose_cfg(ARGS), out / "checkpoints" / "best.ckpt")
    for m in METRICS:
        assert record[f"test_{m}"] == pytest.approx(again["test"][m], abs=1e-6), m
        assert record["best_val_gauc"] == pytest.approx(again["val"]["gauc"], abs=1e-6)
