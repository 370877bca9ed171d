"""Sweeps that survive: re-running a sweep skips finished jobs, re-runs failed and missing ones;
a job stopped outright is never taken for finished; a non-finite loss fails only its job."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import TINY, run_cli

from ctrbench.engine import job


def _records(sweep: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(sweep.glob("*/result.json"))}


def test_rerun_skips_ok_jobs_and_reruns_failed_and_missing(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    args = ["-m", *TINY, "model=lr,base,pnn", f"hydra.sweep.dir={sweep}"]
    first = run_cli(args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    before = _records(sweep)
    assert [r["status"] for r in before.values()] == ["ok", "ok", "ok"]
    # job 1 failed and job 2 was interrupted before writing its record
    failed = dict(before["1"], status="failed", error="RuntimeError: boom")
    (sweep / "1" / "result.json").write_text(json.dumps(failed))
    (sweep / "2" / "result.json").unlink()

    second = run_cli(args, cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-2000:]
    after = _records(sweep)
    assert after["0"] == before["0"]  # skipped: the very same record
    assert "already holds an ok result.json" in second.stderr + second.stdout
    for num in ("1", "2"):
        assert after[num]["status"] == "ok" and after[num]["started_at"] >= before[num]["started_at"]
        assert after[num]["finished_at"] != before[num]["finished_at"]
    summary = (sweep / "summary.csv").read_text().splitlines()
    assert len(summary) == 4 and all(",ok" in line for line in summary[1:])


def test_a_changed_config_is_not_skipped(compose_cfg, tmp_path: Path) -> None:
    cfg = compose_cfg([*TINY, "model=lr"])
    first = job.run(cfg, tmp_path)
    assert first["status"] == "ok"
    assert job.run(cfg, tmp_path)["started_at"] == first["started_at"]  # identical: skipped
    same = first["fingerprint"]
    changed = compose_cfg([*TINY, "model=lr", "optim.lr=0.01"])
    assert job.finished_record(tmp_path, changed, same) == (None, "the config differs")
    no_resume = compose_cfg([*TINY, "model=lr", "resume=false"])
    assert job.finished_record(tmp_path, no_resume, same)[0] is None  # the flag is part of the config


def test_a_job_stopped_outright_is_never_taken_for_finished(
    compose_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A KeyboardInterrupt where ctrbench's signal handlers are not installed (the Python API) passes
    through; the record on disk says ``running``, never ``ok``, and no temporary file is left."""

    def interrupted(cfg, out_dir, *args):
        raise KeyboardInterrupt

    monkeypatch.setattr(job, "train", interrupted)
    cfg = compose_cfg([*TINY, "model=lr"])
    with pytest.raises(KeyboardInterrupt):
        job.run(cfg, tmp_path)
    assert json.loads((tmp_path / "result.json").read_text())["status"] == "running"
    assert not list(tmp_path.glob("*.tmp*")) and not list(tmp_path.glob(".result.*"))
    monkeypatch.undo()
    assert job.run(cfg, tmp_path)["status"] == "ok"  # resume runs it


def test_non_finite_loss_fails_the_job_with_its_reason(compose_cfg, tmp_path: Path) -> None:
    record = job.run(compose_cfg([*TINY, "model=base", "optim.lr=1e30", "optim.name=sgd"]), tmp_path)
    assert record["status"] == "failed"
    assert record["error"].startswith("NonFiniteLossError: loss became")
    assert json.loads((tmp_path / "result.json").read_text())["status"] == "failed"
