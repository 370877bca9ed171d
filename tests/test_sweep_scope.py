"""A sweep's summary describes the command that wrote it: jobs of an earlier command in the same folder are
left out (and listed), a repeated combination runs and counts once, records of other data or code are
other rows, and Optuna trials of a continued study never reuse a folder."""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from conftest import TINY, run_cli
from omegaconf import OmegaConf
from rich.console import Console

from ctrbench.results import render, summarize, write_result
from ctrbench.results.callback import SummaryCallback
from ctrbench.sweeper import jobs
from ctrbench.sweeper.basic import unique_jobs


def _summary(sweep: Path) -> list[dict[str, str]]:
    with open(sweep / "summary.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _record(
    seed: int, job_num: int, auc: float, model: str = "lr", fingerprint: dict[str, Any] | None = None
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "status": "ok",
        "model": model,
        "dataset": "synthetic",
        "reg": "none",
        "act": "prelu",
        "seed": seed,
        "job_num": job_num,
        "overrides": [f"model={model}", f"seed={seed}"],
        "config": {"model": {"name": model}, "seed": seed},
        "test_auc": auc,
        "test_gauc": auc - 0.05,
        "test_logloss": 0.6,
    }
    if fingerprint is not None:
        record["fingerprint"] = fingerprint
    return record


def _fp(data: str = "abc123", torch: str = "2.5.1") -> dict[str, Any]:
    return {"data": data, "code": {"ctrbench": "0.1.0", "torch": torch}, "device": "cpu"}


# ------------------------------------------------------------------------- real sweeps


def test_summary_covers_this_commands_jobs_and_a_repeated_seed_runs_once(tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    sweep = tmp_path / "sweep"
    first = run_cli(["-m", *TINY, "model=lr", "seed=1,2,3,1", f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "dropped 1 duplicate job of 4" in first.stdout + first.stderr
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1", "2"]  # seed=1 ran once
    # (sums over rows: a source file edited while the test runs splits a row by its code fingerprint)
    assert sum(int(r["n_seeds"]) for r in _summary(sweep)) == 3
    seed3 = (sweep / "2" / "result.json").read_text()

    # a smaller command into the same folder, jobs in joblib workers: seeds 1 and 2 resume, 3 stays
    second = run_cli(
        [
            "-m",
            *TINY,
            "model=lr",
            "seed=1,2",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert (sweep / "2" / "result.json").read_text() == seed3  # untouched, but not this command's
    assert sum(int(r["n_seeds"]) for r in _summary(sweep)) == 2
    md = (sweep / "summary.md").read_text()
    assert "1 job in this folder is from another command, left out of the table: 2 (seed=3)." in md
    assert "from another command" in second.stdout  # printed under the table too
    # `ctrbench report` has no command: it shows everything
    rows = render(sweep, out_dir=tmp_path / "report", console=Console(file=io.StringIO()))
    assert sum(r.n_seeds for r in rows) == 3


def test_optuna_trials_of_a_continued_study_get_new_folders(tmp_path: Path) -> None:
    sweep, storage = tmp_path / "sweep", tmp_path / "study.log"  # one journal-file storage
    args = [
        "-m",
        "hydra/sweeper=optuna",
        *TINY,
        "model=lr",
        "optim.lr=tag(log, interval(1e-3, 1e-2))",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.pruner=none",
        "hydra.sweeper.study_name=continued",
        f"hydra.sweeper.storage={storage}",
        f"hydra.sweep.dir={sweep}",
    ]
    first = run_cli([*args, "hydra.sweeper.seed=0"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    trial0 = sweep / "0" / "result.json"
    before = trial0.read_bytes()
    assert json.loads(before)["config"]["optuna"]["trial"] == 0

    second = run_cli([*args, "hydra.sweeper.seed=1"], cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    folders = {
        json.loads(p.read_text())["config"]["optuna"]["trial"]: p.parent.name
        for p in sweep.glob("*/result.json")
    }
    assert folders == {0: "0", 1: "1", 2: "2", 3: "3"}  # every trial kept its record, in its own folder
    assert trial0.read_bytes() == before  # trial 0's job is untouched
    with open(sweep / "optuna.csv", newline="") as fh:
        dirs = [row["job_dir"] for row in csv.DictReader(fh)]
    assert len(dirs) == 4 and len(set(dirs)) == 4  # the study's four trials, four folders
    summary = _summary(sweep)
    assert sum(int(r["n_seeds"]) for r in summary) == 2  # this command's two trials
    assert "2 jobs in this folder are from another command" in (sweep / "summary.md").read_text()


# ------------------------------------------------------------------------- units


def test_unique_jobs_keeps_the_first_of_each_override_set() -> None:
    kept, dropped = unique_jobs([["a=1", "s=1"], ["a=1", "s=1"], ["s=2", "a=1"], ["a=1", "s=2"]])
    assert kept == [["a=1", "s=1"], ["s=2", "a=1"]]
    assert dropped == [["a=1", "s=1"], ["a=1", "s=2"]]  # the same set in another order is the same job


def test_claim_numbers_skips_taken_folders(tmp_path: Path) -> None:
    (tmp_path / "3").mkdir()
    write_result(tmp_path / "custom" / "x", {"status": "ok", "job_num": 7})
    assert jobs.next_job_number(tmp_path) == 8  # numbered folders and records' job_num
    assert jobs.next_job_number(tmp_path / "new") == 0
    (tmp_path / "9").mkdir()
    assert jobs.claim_numbers(tmp_path, 8, 2, make_dirs=True) == 10  # 9 is taken: 10 and 11
    assert (tmp_path / "10").is_dir() and (tmp_path / "11").is_dir() and not (tmp_path / "8").exists()
    assert jobs.claim_numbers(tmp_path, 8, 2, make_dirs=False) == 8


def test_identical_configs_count_once_with_a_note(tmp_path: Path) -> None:
    records = [_record(1, 0, 0.70), _record(1, 1, 0.90), _record(2, 2, 0.72)]  # job 1 repeats job 0
    (row,) = summarize(records)
    assert row.n_seeds == 2 and row.auc_mean == pytest.approx((0.70 + 0.72) / 2)
    for record in records:
        write_result(tmp_path / str(record["job_num"]), record)
    render(tmp_path, console=Console(file=io.StringIO()))
    md = (tmp_path / "summary.md").read_text()
    assert "1 job repeats the config of another, counted once: 1 (seed=1) as 0." in md


def test_report_splits_records_of_other_data_or_code(tmp_path: Path) -> None:
    from ctrbench.cli import main

    records = [
        _record(1, 0, 0.60, model="base", fingerprint=_fp()),
        _record(1, 1, 0.70, fingerprint=_fp()),
        _record(2, 2, 0.72, fingerprint=_fp()),
        _record(3, 3, 0.90, fingerprint=_fp(torch="2.6.0")),  # same config, other torch
        _record(4, 4, 0.80, fingerprint=_fp(data="fff999")),  # same config, other data
        _record(5, 5, 0.50),  # an older record: no fingerprint
    ]
    for record in records:
        write_result(tmp_path / str(record["job_num"]), record)
    assert main(["report", str(tmp_path)]) == 0
    rows = _summary(tmp_path)
    assert [(r["model"], r["n_seeds"], r["fingerprint"]) for r in rows] == [
        ("base", "1", "data abc123, torch 2.5.1"),
        ("lr", "2", "data abc123, torch 2.5.1"),
        ("lr", "1", "data abc123, torch 2.6.0"),
        ("lr", "1", "data fff999, torch 2.5.1"),
        ("lr", "1", "no fingerprint"),
    ]
    assert float(rows[1]["auc_mean"]) == pytest.approx(0.71)  # only the two records of one fingerprint
    # RelaImpr only against the base row of the same data and code
    assert float(rows[1]["relaimpr"]) == pytest.approx(((0.71 - 0.5) / (0.60 - 0.5) - 1) * 100)
    assert [r["relaimpr"] for r in rows[2:]] == ["", "", ""]
    md = (tmp_path / "summary.md").read_text()
    assert "[data abc123, torch 2.6.0]" in md and "different data or code" in md


def test_callback_without_published_jobs_summarizes_the_whole_folder(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ctrbench")
    for record in [_record(1, 0, 0.7), _record(2, 1, 0.8)]:
        write_result(tmp_path / str(record["job_num"]), record)
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    callback = SummaryCallback()
    callback.on_multirun_start(config)
    jobs.publish(tmp_path, [[_Return(tmp_path / "1")]])
    callback.on_multirun_end(config)
    assert [r["n_seeds"] for r in _summary(tmp_path)] == ["1"]  # the published job only
    callback.on_multirun_start(config)
    callback.on_multirun_end(config)  # nothing published by this command's sweeper
    assert [r["n_seeds"] for r in _summary(tmp_path)] == ["2"]
    assert "did not list its jobs" in caplog.text


class _Return:
    """The part of Hydra's ``JobReturn`` that :func:`jobs.publish` reads."""

    def __init__(self, folder: Path) -> None:
        self.hydra_cfg = OmegaConf.create({"hydra": {"runtime": {"output_dir": str(folder)}}})
