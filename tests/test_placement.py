"""A record says where its job ran: host, process, visible devices, the scheduler's ids, its rank."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import TINY

from ctrbench.engine import job
from ctrbench.engine.placement import placement


def test_the_record_names_the_visible_devices_and_the_slurm_job(
    compose_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    monkeypatch.delenv("RANK", raising=False)
    record = job.run(compose_cfg([*TINY, "model=lr", "checkpoint=false"]), tmp_path)
    where = record["placement"]
    assert record["status"] == "ok"
    assert where["cuda_visible_devices"] == "" and where["pid"] == os.getpid()
    assert where["slurm"] == {"job_id": "4242", "array_task_id": "3"}
    assert where["ray"] is None and where["distributed"] is None


def test_unset_variables_are_none_and_a_rank_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID", "SLURM_PROCID", "LOCAL_RANK", "GROUP_RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    where = placement()
    assert where["cuda_visible_devices"] is None and where["slurm"] is None
    assert where["distributed"] == {"rank": "1", "world_size": "2"}
