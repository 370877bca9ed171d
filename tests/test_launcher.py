"""hydra/launcher=gpus: one GPU slot per worker process; refusals before launch; cluster presets."""

from __future__ import annotations

import csv
import json
import multiprocessing as mp
import os
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import TINY, run_cli
from omegaconf import OmegaConf

from ctrbench.launcher import LaunchError, check_args, checks, gpu_slots, prepare_job

N_JOBS_PER_WORKER = 3


# ---- pure pieces -------------------------------------------------------------------------------------
def test_gpu_list_and_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    assert gpu_slots.parse_gpus("0,2, 5") == ["0", "2", "5"]
    assert gpu_slots.parse_gpus("") == [] and gpu_slots.parse_gpus("-1") == []
    assert gpu_slots.parse_gpus("1,-1,2") == ["1"]  # CUDA stops at the first invalid id
    assert gpu_slots.detect_gpus({"CTRBENCH_GPUS": "3,4", "CUDA_VISIBLE_DEVICES": "0"}) == ["3", "4"]
    assert gpu_slots.detect_gpus({"CUDA_VISIBLE_DEVICES": "1,0"}) == ["1", "0"]
    assert gpu_slots.detect_gpus({"CTRBENCH_GPUS": ""}) == []  # forced CPU
    monkeypatch.setattr(gpu_slots.shutil, "which", lambda name: None)
    assert gpu_slots.detect_gpus({}) == []  # no nvidia-smi: no GPUs
    assert gpu_slots.default_n_jobs(n_gpus=4, cores=64) == 4
    assert gpu_slots.default_n_jobs(n_gpus=0, cores=16) == 4 and gpu_slots.default_n_jobs(0, 2) == 1
    assert gpu_slots.threads_per_job(cores=16, n_jobs=4) == 4
    assert gpu_slots.threads_per_job(cores=2, n_jobs=8) == 1
    assert gpu_slots.threads_per_job(cores=8, n_jobs=-1) == 1  # joblib's -1: one job per core


def _slot_worker(env: dict[str, str], barrier: Any, release: Any, out: Any) -> None:
    """A launcher worker: several jobs, each claiming 'its' GPU first; holds the slot until released."""
    os.environ.update(env)
    seen = []
    for job in range(N_JOBS_PER_WORKER):
        slot = gpu_slots.claim_gpu()
        seen.append((slot.gpu, os.environ["CUDA_VISIBLE_DEVICES"], gpu_slots.detect_gpus()))
        if job == 0:
            barrier.wait(timeout=30)  # every worker holds a slot at the same time
    out.put((os.getpid(), seen))
    release.wait(timeout=30)


def _late_worker(env: dict[str, str], out: Any) -> None:
    os.environ.update(env)
    try:
        out.put(gpu_slots.claim_gpu().gpu)
    except gpu_slots.NoFreeSlot as exc:
        out.put(f"NoFreeSlot: {exc}")


def test_concurrent_workers_get_distinct_slots_for_life(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    env = {
        "CTRBENCH_GPUS": "0,1,2",
        "CTRBENCH_SLOT_DIR": str(tmp_path / "slots"),
        "CTRBENCH_SLOT_TIMEOUT": "0",
    }
    barrier, release, out = ctx.Barrier(3), ctx.Event(), ctx.Queue()
    workers = [ctx.Process(target=_slot_worker, args=(env, barrier, release, out)) for _ in range(3)]
    for w in workers:
        w.start()
    try:
        results = [out.get(timeout=60) for _ in workers]
        gpus = []
        for _pid, seen in results:
            assert len(seen) == N_JOBS_PER_WORKER
            assert len({gpu for gpu, _, _ in seen}) == 1  # one worker, one GPU for all its jobs
            for gpu, visible, listed in seen:
                assert visible == gpu  # CUDA_VISIBLE_DEVICES pinned to the slot
                assert listed == ["0", "1", "2"]  # the full list stays known to the process
            gpus.append(seen[0][0])
        assert sorted(gpus) == ["0", "1", "2"]  # no two workers share a GPU
        assert sorted(p.name for p in (tmp_path / "slots").iterdir()) == [
            "gpu0.lock",
            "gpu1.lock",
            "gpu2.lock",
        ]

        late = ctx.Process(target=_late_worker, args=(env, out))  # every GPU is taken
        late.start()
        late.join(60)
        message = out.get(timeout=10)
        assert message.startswith("NoFreeSlot") and "0, 1, 2" in message
    finally:
        release.set()
        for w in workers:
            w.join(60)
    late = ctx.Process(target=_late_worker, args=(env, out))  # the slots died with their processes
    late.start()
    late.join(60)
    assert out.get(timeout=10) == "0"


def test_claim_belongs_to_the_process_that_made_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    slot = gpu_slots.Slot(index=0, gpu="0", path=tmp_path / "gpu0.lock", pid=os.getpid() + 1)
    monkeypatch.setattr(gpu_slots, "_held", (slot, -1))
    assert gpu_slots.held_slot() is None  # inherited through fork: not this process's slot


def _hydra_cfg(mode: str, launcher: str, n_jobs: int = 2) -> Any:
    from hydra.types import RunMode

    return OmegaConf.create(
        {
            "mode": RunMode[mode],
            "runtime": {"choices": {"hydra/launcher": launcher}},
            "launcher": {"n_jobs": n_jobs},
        }
    )


def test_prepare_job_on_cpu_sets_threads_and_refuses_multi_device(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    import ctrbench.launcher as launcher

    monkeypatch.setenv("CTRBENCH_GPUS", "")  # a machine without GPUs
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(launcher, "cpu_count", lambda: 8)
    before = torch.get_num_threads()
    try:
        trainer = OmegaConf.create({"trainer": {"devices": 1, "accelerator": "auto"}})
        assert prepare_job(trainer, _hydra_cfg("MULTIRUN", "gpus", n_jobs=4)) is None
        assert torch.get_num_threads() == 2  # 8 cores / 4 jobs
    finally:
        torch.set_num_threads(before)
        monkeypatch.setattr(launcher, "_threads_set", None)
    # from a config file rather than the command line: refused in the job, before training
    ddp = OmegaConf.create({"trainer": {"devices": 1, "strategy": "ddp"}})
    with pytest.raises(LaunchError, match="11300"):
        prepare_job(ddp, _hydra_cfg("MULTIRUN", "basic"))
    assert prepare_job(ddp, _hydra_cfg("RUN", "basic")) is None  # a single run may use ddp


def test_check_args_multi_device_rules() -> None:
    refused = [
        ["-m", "trainer.devices=2"],
        ["-m", "trainer.devices=[0,1]"],
        ["-m", "trainer.devices=1,2"],  # a sweep that would try 2
        ["-m", "+trainer.strategy=ddp_find_unused_parameters_true"],
        ["-m", "trainer.num_nodes=2"],
        ["hydra.mode=MULTIRUN", "trainer.devices=4"],
    ]
    for args in refused:
        with pytest.raises(LaunchError) as info:
            check_args(args, n_gpus=0)
        assert "Lightning issue 11300" in str(info.value) and "\n" not in str(info.value), args
    with pytest.raises(LaunchError, match=r"trainer.devices=-1"):
        check_args(["-m", "trainer.devices=-1"], n_gpus=2)
    check_args(["-m", "trainer.devices=-1"], n_gpus=1)
    check_args(["-m", "hydra/launcher=gpus", "trainer.devices=-1"], n_gpus=4)  # a worker sees one GPU
    check_args(["-m", "trainer.devices=1", "model=lr,base"], n_gpus=8)
    check_args(["trainer.devices=2", "trainer.strategy=ddp"], n_gpus=2)  # single runs may
    with pytest.raises(LaunchError, match="n_jobs=3"):
        check_args(["-m", "hydra/launcher=gpus", "hydra.launcher.n_jobs=3"], n_gpus=2)


def test_missing_launcher_package_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        checks, "_importable", lambda module: not module.startswith("hydra_plugins.hydra_sub")
    )
    with pytest.raises(
        LaunchError, match=r"^hydra/launcher=slurm needs `pip install hydra-submitit-launcher`$"
    ):
        check_args(["-m", "hydra/launcher=slurm", "model=lr"])
    monkeypatch.setattr(checks, "_importable", lambda module: module != "ray")
    assert checks.requirement_problem("hydra/launcher", "ray_gpus") == (
        "hydra/launcher=ray_gpus needs `pip install hydra-ray-launcher`"
    )
    monkeypatch.setattr(checks, "_importable", lambda module: module == "tensorboardX")
    assert checks.requirement_problem("logger", "tensorboard") is None  # either package will do


def test_presets_compose(compose_cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    from hydra.core.config_store import ConfigStore

    monkeypatch.setenv("CTRBENCH_GPUS", "0,1,2")
    cfg = compose_cfg_hydra(["hydra/launcher=gpus"])
    assert cfg.hydra.launcher.n_jobs == 3 and "JoblibLauncher" in cfg.hydra.launcher._target_
    # the cluster presets extend the plugins' own configs; stand-ins when the plugins are not installed
    store, added = ConfigStore.instance(), []
    stand_ins = {
        "submitit_slurm": ("hydra_plugins.hydra_submitit_launcher", {"_target_": "x", "gpus_per_task": None}),
        "ray": ("hydra_plugins.hydra_ray_launcher", {"_target_": "x", "ray": {"init": {}, "remote": {}}}),
    }
    for name, (module, node) in stand_ins.items():
        if not checks._importable(module):
            store.store(group="hydra/launcher", name=name, node=node)
            added.append(f"{name}.yaml")
    try:
        slurm = compose_cfg_hydra(["hydra/launcher=slurm"]).hydra.launcher
        assert slurm.gpus_per_task == 1 and slurm.timeout_min > 0 and slurm.cpus_per_task > 0
        assert compose_cfg_hydra(["hydra/launcher=ray_gpus"]).hydra.launcher.ray.remote.num_gpus == 1
    finally:
        for key in added:
            store.repo["hydra"]["launcher"].pop(key, None)


def compose_cfg_hydra(overrides: list[str]) -> Any:
    from hydra import compose

    return compose("config", overrides=overrides, return_hydra_config=True)


# ---- the real command --------------------------------------------------------------------------------
def test_gpus_launcher_sweep_runs_parallel_jobs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two loky workers on two fake GPUs (the slot files are real), training on the CPU whatever the
    machine has; each job logs to its own offline wandb run, grouped by sweep."""
    from test_loggers import offline_runs  # (not at the top: spawned slot workers import this module)

    monkeypatch.setenv("CTRBENCH_GPUS", "0,1")
    monkeypatch.setenv("CTRBENCH_SLOT_DIR", str(tmp_path / "slots"))
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    sweep = tmp_path / "sweep"
    args = [
        "-m",
        *(arg for arg in TINY if not arg.startswith("logger=")),
        "hydra/launcher=gpus",
        "hydra.launcher.n_jobs=2",
        "model=lr,base",
        "trainer.accelerator=cpu",
        "logger=wandb",
        "logger.mode=offline",
        f"hydra.sweep.dir={sweep}",
    ]
    proc = run_cli(args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(sweep / "summary.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [row["model"] for row in rows] == ["lr", "base"] and {row["status"] for row in rows} == {"ok"}
    claims = {}
    for job in sorted(sweep.glob("[0-9]*")):
        assert json.loads((job / "result.json").read_text())["status"] == "ok"
        line = re.search(r"worker pid (\d+): GPU (\S+)", (job / "ctrbench.log").read_text())
        assert line, (job / "ctrbench.log").read_text()
        pid, gpu = line.groups()
        assert claims.setdefault(pid, gpu) == gpu  # a worker keeps its GPU
    assert len(set(claims.values())) == len(claims)  # two workers never share one
    assert os.getpid() not in map(int, claims)  # the jobs ran in worker processes

    runs = offline_runs(tmp_path / "wb")
    assert len(runs) == 2  # one run per job
    assert {run["group"] for run in runs.values()} == {"sweep"}  # the sweep dir, relative to the cwd
    assert sorted(run["job_type"] for run in runs.values()) == ["base", "lr"]  # the model option
    for run in runs.values():
        assert f"model={run['job_type']}" in run["name"].split(",")  # the job's override string
        assert run["exit"] == 0  # finished


def test_multi_device_sweep_is_refused_in_one_line(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = run_cli(
        ["-m", "trainer.devices=2", "model=lr,base", f"hydra.sweep.dir={sweep}", *TINY], cwd=tmp_path
    )
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "trainer.devices=2" in lines[0] and "Lightning issue 11300" in lines[0]
    assert not sweep.exists() and not (tmp_path / "results").exists()  # no job started
