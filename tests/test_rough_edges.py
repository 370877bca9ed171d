"""What a new user meets first: the version, epochs counted from 1, one-epoch curves, no repeated
warnings, the paper layout's order on other data, file modes and printed paths."""

from __future__ import annotations

import io
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import TINY
from rich.console import Console

from ctrbench.cli import main
from ctrbench.engine.job import log_every_n_steps
from ctrbench.engine.progress import EpochProgressBar, epoch_description
from ctrbench.results import write_result
from ctrbench.results.paper import TABLES
from ctrbench.results.tables import render

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- --version


def test_version_prints_name_and_installed_version_and_exits_0(capsys) -> None:
    from importlib.metadata import version

    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"ctrbench {version('ctrbench')}\n"


def test_version_from_the_command_line_before_hydra(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ctrbench", "--version"], cwd=tmp_path, capture_output=True, text=True
    )
    assert proc.returncode == 0 and re.fullmatch(r"ctrbench \d+\.\d+\.\d+\S*\n", proc.stdout), proc.stderr
    assert not (tmp_path / "results").exists()  # no Hydra run folder


# ---------------------------------------------------------------- epochs counted from 1


def test_progress_bar_counts_epochs_from_one() -> None:
    assert epoch_description(0, 1) == "Epoch 1/1"  # Lightning's own bar: "Epoch 0/0"
    assert epoch_description(2, 5) == "Epoch 3/5"
    assert epoch_description(0, -1) == "Epoch 1"  # open-ended training
    bar = EpochProgressBar()
    bar._trainer = SimpleNamespace(max_epochs=1)
    assert bar._get_train_description(0).strip() == "Epoch 1/1"


# ---------------------------------------------------------------- logging interval


@pytest.mark.parametrize(
    ("rows", "batch", "limit", "expected"),
    [
        (9_758, 256, None, 39),  # ceil(9758 / 256) = 39 batches < 50
        (100_000, 256, None, 50),  # 391 batches: Lightning's default stays
        (9_758, 256, 5, 5),  # trainer.limit_train_batches=5
        (9_758, 256, 0.5, 19),  # int(39 * 0.5)
        (0, 256, None, 1),
    ],
)
def test_log_every_n_steps_is_at_most_the_batches_of_an_epoch(rows, batch, limit, expected) -> None:
    assert log_every_n_steps(rows, batch, limit) == expected


# ---------------------------------------------------------------- result.json's mode


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640)])
def test_result_json_mode_follows_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    old = os.umask(umask)
    try:
        path = write_result(tmp_path, {"status": "ok"})
        other = tmp_path / "other.txt"
        other.write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == mode == stat.S_IMODE(other.stat().st_mode)


# ---------------------------------------------------------------- a tiny one-epoch sweep, end to end


@pytest.fixture(scope="module")
def one_epoch_sweep(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """Three one-epoch jobs with the default CSV logger, warnings on, an 80-column terminal."""
    cwd = tmp_path_factory.mktemp("sweep")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    env.update(WANDB_MODE="disabled", HYDRA_FULL_ERROR="0", COLUMNS="80")
    args = [a for a in TINY if a != "logger=none"] + ["seed=1,2,3", "hydra.sweep.dir=sweep"]
    proc = subprocess.run(
        [sys.executable, "-m", "ctrbench", "-m", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        umask=0o022,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, cwd / "sweep"


def test_one_epoch_sweep_prints_no_logging_interval_warning(one_epoch_sweep) -> None:
    proc, sweep = one_epoch_sweep
    assert "smaller than the logging interval" not in proc.stderr + proc.stdout
    assert "The `srun` command is available" not in proc.stderr + proc.stdout
    record = json.loads((sweep / "0" / "result.json").read_text())
    assert record["config"]["trainer"]["log_every_n_steps"] == 50  # as before: old records still resume


def test_one_epoch_sweep_writes_curves(one_epoch_sweep) -> None:
    _, sweep = one_epoch_sweep
    assert (sweep / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_one_epoch_sweep_counts_epochs_from_one(one_epoch_sweep) -> None:
    proc, sweep = one_epoch_sweep
    done = [line for line in (proc.stdout + proc.stderr).splitlines() if "done: test AUC" in line]
    assert len(done) == 3 and all("(epoch 1 of 1, selected by" in line for line in done)
    record = json.loads((sweep / "0" / "result.json").read_text())
    assert record["best_epoch"] == 0 and record["epochs"][0]["epoch"] == 0  # stored from 0, as before


def test_one_epoch_sweep_files_share_one_mode(one_epoch_sweep) -> None:
    _, sweep = one_epoch_sweep
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (sweep / "0").iterdir() if p.is_file()}
    assert modes["result.json"] == 0o644 and set(modes.values()) == {0o644}, modes
    assert stat.S_IMODE((sweep / "summary.md").stat().st_mode) == 0o644


def test_printed_paths_are_absolute_and_whole_at_80_columns(one_epoch_sweep) -> None:
    proc, sweep = one_epoch_sweep
    lines = proc.stdout.splitlines()
    listed = [line.strip() for line in lines[lines.index("wrote:") + 1 :] if line.startswith("  /")]
    assert {Path(p).name for p in listed} >= {"summary.csv", "summary.md", "curves.png", "report.html"}
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in listed), listed
    assert all(Path(p).parent == sweep.resolve() for p in listed)
    assert f"ctrbench summary: {sweep.resolve()}" in proc.stdout.replace("\n", "")


# ---------------------------------------------------------------- paper layout on other data


def _dien_record(job: int, row: str, auc: float) -> dict[str, Any]:
    spec = TABLES["dien_table4"].row(row)
    return {
        "status": "ok",
        "error": None,
        "model": spec.model,
        "dataset": "synthetic",
        "reg": "none",
        "act": "prelu",
        "seed": 1,
        "job_num": job,
        "overrides": [f"row=dien_table4/{row}", "dataset=synthetic", "seed=1"],
        "config": {"paper": "dien_table4", "dataset": {"name": "synthetic", "n_users": 200}},
        "test_auc": auc,
        "test_gauc": auc - 0.01,
        "test_logloss": 0.5,
    }


def test_paper_preset_on_other_data_shows_the_rows_that_ran_first(tmp_path: Path) -> None:
    for rec in (_dien_record(0, "augru", 0.71), _dien_record(1, "base", 0.70)):
        write_result(tmp_path / str(rec["job_num"]), rec)
    out = io.StringIO()
    render(tmp_path, console=Console(file=out, width=200))
    md = (tmp_path / "summary.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| Paper")]
    table = TABLES["dien_table4"]
    assert len(rows) == 2 + len(table.rows) * len(table.datasets)
    ran, idle = rows[:2], rows[2:]
    # the rows that ran, in the paper's order, headed by the data they used; then the paper's rows
    assert [r.split(" | ")[:2] for r in ran] == [
        ["| BaseModel", "ran on synthetic"],
        ["| BaseModel + GRU + AUGRU", "ran on synthetic"],
    ]
    assert all("not run" in r for r in idle) and not any("not run" in r for r in ran)
    assert [r.split(" | ")[1] for r in idle] == ["Electronics"] * 6 + ["Books"] * 6
    assert "The rows that ran used ran on synthetic" not in md
    assert "The rows that ran used synthetic, none of the paper's datasets" in md
    printed = out.getvalue()
    assert printed.index("ran on synthetic") < printed.index("not run")


# ---------------------------------------------------------------- CHANGELOG


def test_changelog_has_unreleased_then_the_installed_version() -> None:
    from importlib.metadata import version

    headings = re.findall(r"^## \[([^\]]+)\]", (ROOT / "CHANGELOG.md").read_text(), flags=re.M)
    assert headings[:2] == ["Unreleased", version("ctrbench")]
