"""The real `ctrbench` command in subprocesses: sweeps, failures, plugin listing, bad input."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from conftest import PAPER_MODELS, TINY, run_cli


def _summary(folder: Path) -> list[dict[str, str]]:
    with open(folder / "summary.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_multirun_two_models_two_seeds(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = run_cli(
        ["-m", "model=lr,base", "seed=1,2", "trainer.max_epochs=1", f"hydra.sweep.dir={sweep}", *TINY],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = sorted(sweep.glob("*/result.json"))
    assert len(results) == 4
    records = [json.loads(p.read_text()) for p in results]
    assert {r["status"] for r in records} == {"ok"}
    assert sorted((r["model"], r["seed"]) for r in records) == [
        ("base", 1),
        ("base", 2),
        ("lr", 1),
        ("lr", 2),
    ]
    for r in records:
        assert len(r["epochs"]) == 1 and r["plugins"]["model"]["dist"] == "ctrbench"
        assert all(math.isfinite(r[k]) for k in ("test_auc", "test_gauc", "test_logloss"))
        assert r["test_selected"]["epoch"] == 0 and r["samples_per_s"] > 0
    rows = _summary(sweep)
    assert [row["model"] for row in rows] == ["lr", "base"]  # the command line's order
    for row in rows:
        assert row["n_seeds"] == "2" and row["status"] == "ok"
        for key in ("auc_mean", "auc_std", "gauc_mean", "gauc_std", "logloss_mean", "logloss_std"):
            assert math.isfinite(float(row[key])), key
    assert float(rows[1]["relaimpr"]) == 0.0  # base against itself
    assert (sweep / "summary.md").read_text().count("\n") >= 4 and (sweep / "summary.tex").exists()

    # the report command re-renders the tables from the folder alone
    for name in ("summary.csv", "summary.md", "summary.tex"):
        (sweep / name).unlink()
    proc = run_cli(["report", str(sweep)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert [row["model"] for row in _summary(sweep)] == ["lr", "base"]
    assert "base" in proc.stdout


def test_sweep_with_plugin_package_and_a_failing_plugin(tmp_path: Path, fake_plugins: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = run_cli(
        ["-m", "model=mean,kaput,base", f"hydra.sweep.dir={sweep}", *TINY],
        cwd=tmp_path,
        extra_path=fake_plugins,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {row["model"]: row for row in _summary(sweep)}
    assert set(rows) == {"mean", "kaput", "base"}
    assert rows["kaput"]["status"] == "failed" and rows["kaput"]["n_seeds"] == "0"
    assert "ImportError" in rows["kaput"]["error"]
    for ok in ("mean", "base"):
        assert rows[ok]["status"] == "ok" and math.isfinite(float(rows[ok]["auc_mean"]))
    failed = [json.loads(p.read_text()) for p in sweep.glob("*/result.json")]
    assert sorted(r["status"] for r in failed) == ["failed", "ok", "ok"]


def test_unknown_model_is_one_line(tmp_path: Path) -> None:
    proc = run_cli(["model=nope"], cwd=tmp_path)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "unknown model 'nope'" in lines[0] and "base" in lines[0] and "lr" in lines[0]
    assert not (tmp_path / "results").exists()  # nothing was started


def test_plugins_command_lists_status(tmp_path: Path, fake_plugins: Path) -> None:
    proc = run_cli(["plugins"], cwd=tmp_path, extra_path=fake_plugins)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for name in ("base", "lr", "synthetic", "prelu", "mean", "kaput", "fakeplugin"):
        assert name in out
    kaput = next(line for line in out.splitlines() if "kaput" in line)
    assert "broken" in kaput


def test_cfg_and_help_are_hydra_native(tmp_path: Path) -> None:
    proc = run_cli(["--cfg", "job", "model=lr", "model.use_behaviours=false"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "name: lr" in proc.stdout and "use_behaviours: false" in proc.stdout
    proc = run_cli(["--help"], cwd=tmp_path)
    assert proc.returncode == 0 and "ctrbench plugins" in proc.stdout
    groups = next(line for line in proc.stdout.splitlines() if line.startswith("model:"))
    assert {"base", "lr", "din", "din_official"} <= set(
        groups.removeprefix("model:").replace(",", " ").split()
    )


def test_failed_single_run_exits_non_zero_with_one_error_line(tmp_path: Path) -> None:
    proc = run_cli([*TINY, "dataset.noise=-0.5", "hydra.run.dir=run"], cwd=tmp_path)
    assert proc.returncode == 1
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "dataset.noise=-0.5 is invalid" in errors[0], proc.stderr
    record = json.loads((tmp_path / "run" / "result.json").read_text())
    assert record["status"] == "failed" and record["error"].startswith("ValueError: dataset.noise")


def test_multirun_over_every_paper_model(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    models = [*PAPER_MODELS, "din_official"]  # plus a thin variant: a YAML over the din plugin
    proc = run_cli(["-m", f"model={','.join(models)}", f"hydra.sweep.dir={sweep}", *TINY], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _summary(sweep)
    assert [row["model"] for row in rows] == models  # the paper's order, as typed
    assert all(row["status"] == "ok" and math.isfinite(float(row["auc_mean"])) for row in rows), rows
    dien = json.loads(
        next(p for p in sweep.glob("*/result.json") if '"model": "dien"' in p.read_text()).read_text()
    )
    assert dien["epochs"][0]["train_aux"] > 0  # the auxiliary loss is logged on its own (DIEN Fig. 2)
    assert dien["epochs"][0]["train_loss"] > dien["epochs"][0]["train_ctr_loss"]
