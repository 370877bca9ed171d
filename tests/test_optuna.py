"""ctrbench's Optuna sweeper (hydra/sweeper=optuna): search-space syntax, real sweeps, pruning, failures."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import optuna
import pytest
from conftest import TINY, run_cli
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from ctrbench.sweeper.space import parse_search_space


def _trials_csv(sweep: Path) -> list[dict[str, str]]:
    with open(sweep / "optuna.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _records(sweep: Path) -> dict[int, dict]:
    """result.json of every job by the Optuna trial number it ran."""
    records = [json.loads(p.read_text()) for p in sweep.glob("*/result.json")]
    return {r["config"]["optuna"]["trial"]: r for r in records}


def test_search_space_syntax_maps_to_optuna_distributions() -> None:
    space = parse_search_space(
        {
            "reg.lam": "tag(log, interval(1e-4, 1.0))",
            "trainer": {"max_epochs": "range(1,5)"},  # nested keys flatten to trainer.max_epochs
            "model": "choice(din, base)",
            "dataset.max_len": "interval(10, 50)",  # integer bounds as typed → an int
            "optim.lr": "interval(0.001, 1)",
            "batch_size": 128,  # a plain value: fixed, not an Optuna parameter
            "seed": 2,
        },
        ["act=prelu,dice", "seed=3", "+sweep=lambda"],  # the command line joins and wins
    )
    d = space.distributions
    assert d["reg.lam"] == FloatDistribution(1e-4, 1.0, log=True)
    assert d["trainer.max_epochs"] == IntDistribution(1, 4)  # range() excludes its end
    assert d["model"] == CategoricalDistribution(("din", "base"))
    assert d["dataset.max_len"] == IntDistribution(10, 50)
    assert d["optim.lr"] == FloatDistribution(0.001, 1.0)
    assert d["act"] == CategoricalDistribution(("prelu", "dice"))
    assert set(d) == {"reg.lam", "trainer.max_epochs", "model", "dataset.max_len", "optim.lr", "act"}
    assert space.fixed == ["batch_size=128", "seed=3", "+sweep=lambda"]
    assert space.overrides({"reg.lam": 0.01, "model": "base"})[-2:] == ["reg.lam=0.01", "model=base"]


def test_lambda_preset_selects_the_optuna_sweeper() -> None:
    """conf/sweep/lambda.yaml as written (the real sweep below composes it through the CLI)."""
    from omegaconf import OmegaConf

    from ctrbench.cli import conf_dir
    from ctrbench.sweeper.config import HYDRA_TARGET, OptunaSweeperConf

    preset = OmegaConf.load(conf_dir() / "sweep" / "lambda.yaml")
    assert "override /hydra/sweeper" in OmegaConf.to_container(preset)["defaults"][0]
    assert not (conf_dir() / "hydra" / "sweeper" / "optuna.yaml").exists()  # it would shadow the node
    options = OmegaConf.merge(OmegaConf.structured(OptunaSweeperConf), preset.hydra.sweeper)  # schema-valid
    assert options._target_ == HYDRA_TARGET and options.direction == "maximize"
    space = parse_search_space(options.params)
    assert space.distributions == {"reg.lam": FloatDistribution(1e-4, 10.0, log=True)}


def test_sqlite_study_two_workers_prunes_a_hopeless_trial(tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    sweep, db = tmp_path / "sweep", tmp_path / "study.db"
    # Trials 0 and 1 (the first batch) complete; trial 2 barely moves its weights (lr 1e-6) and so is
    # below the median of 0 and 1 after its first epoch: the median pruner (2 startup trials) stops it.
    enqueue = (
        "[{reg.lam: 0.001, optim.lr: 0.003}, {reg.lam: 0.01, optim.lr: 0.001},"
        " {reg.lam: 0.01, optim.lr: 1e-6}]"
    )
    proc = run_cli(
        [
            "-m",
            "+sweep=lambda",  # hydra/sweeper=optuna, search space reg.lam (YAML)
            "model=base",
            "reg=mba",
            "optim.lr=tag(log, interval(1e-6, 1e-2))",  # a second dimension, from the command line
            *TINY,
            "trainer.max_epochs=2",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            "hydra.sweeper.n_trials=4",
            "hydra.sweeper.n_jobs=2",
            "hydra.sweeper.seed=0",
            "hydra.sweeper.n_startup_trials=2",
            f"hydra.sweeper.storage={db}",  # a .db path is SQLite
            f"hydra.sweeper.enqueue={enqueue}",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    study = optuna.load_study(study_name="lambda-base-mba", storage=f"sqlite:///{db}")
    trials = sorted(study.get_trials(), key=lambda t: t.number)
    assert len(trials) == 4
    assert [t.state for t in trials[:3]] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED]
    assert trials[3].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert trials[2].params == {"reg.lam": 0.01, "optim.lr": 1e-6}
    # the jobs (in joblib workers) reported every epoch to their trials through the shared storage
    assert sorted(trials[0].intermediate_values) == [0, 1] and list(trials[2].intermediate_values) == [0]

    records = _records(sweep)
    assert records[2]["status"] == "pruned" and len(records[2]["epochs"]) == 1
    assert records[2]["optuna"]["pruned_epoch"] == 0
    assert records[0]["status"] == "ok" and len(records[0]["epochs"]) == 2
    assert math.isclose(trials[0].value, records[0]["best_val_gauc"])  # objective = the task's metric

    rows = _trials_csv(sweep)
    assert [int(r["number"]) for r in rows] == [0, 1, 2, 3]
    best = [r for r in rows if r["best"] == "yes"]
    assert len(best) == 1 and int(best[0]["number"]) == study.best_trial.number
    assert math.isclose(float(best[0]["value"]), study.best_value)
    assert rows[2]["state"] == "PRUNED" and float(rows[2]["params.optim.lr"]) == 1e-6

    with open(sweep / "summary.csv", newline="") as fh:
        summary = list(csv.DictReader(fh))
    assert len(summary) == 4 and "pruned" in {r["status"] for r in summary}
    assert not any("optuna." in r["variant"] for r in summary)  # the trial identity is not a variant


def test_failing_trials_are_fail_and_the_sweep_goes_on(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    # in memory, basic launcher: trial 0 fails in its job (invalid noise), trial 1 does not compose
    # (n_cats is an int), trial 2 runs
    enqueue = (
        "[{dataset.noise: -0.5, dataset.n_cats: 20}, {dataset.noise: 0.1, dataset.n_cats: many},"
        " {dataset.noise: 0.1, dataset.n_cats: 20}]"
    )
    proc = run_cli(
        [
            "-m",
            "hydra/sweeper=optuna",
            "model=base",
            *TINY,
            "dataset.noise=interval(0.0, 0.2)",
            "dataset.n_cats=choice(20, many)",
            "hydra.sweeper.n_trials=3",
            f"hydra.sweeper.enqueue={enqueue}",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _trials_csv(sweep)
    assert [r["state"] for r in rows] == ["FAIL", "FAIL", "COMPLETE"]
    assert "dataset.noise" in rows[0]["error"] and rows[0]["job_dir"]
    assert "many" in rows[1]["error"] and not rows[1]["job_dir"]  # no job for a config that does not compose
    assert rows[2]["best"] == "yes" and 0.0 < float(rows[2]["value"]) <= 1.0
    records = _records(sweep)
    assert records[0]["status"] == "failed" and records[2]["status"] == "ok"
    assert sorted(records) == [0, 2]


def test_missing_database_driver_fails_at_once_in_one_line(tmp_path: Path) -> None:
    import importlib.util

    from sqlalchemy.engine import make_url

    url = "postgresql://someone:hunter2@nohost/db"
    driver = make_url(url).get_dialect().driver  # SQLAlchemy's default PostgreSQL driver module
    if importlib.util.find_spec(driver) is not None:
        pytest.skip(f"the driver {driver} is installed here")
    proc = run_cli(
        [
            "-m",
            "hydra/sweeper=optuna",
            *TINY,
            "hydra.sweeper.n_trials=1",
            f"hydra.sweeper.storage={url}",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "retrying" not in proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("ctrbench: error: Optuna storage postgresql://someone:***@nohost/db needs ")
    assert f"the database driver '{driver}', which is not installed: pip install " in lines[0]
    assert "hunter2" not in proc.stdout + proc.stderr
    assert not list((tmp_path / "sweep").glob("*/result.json"))  # no job ran


def test_only_transient_storage_errors_are_retried(monkeypatch) -> None:
    from sqlalchemy.exc import OperationalError

    from ctrbench.sweeper import optuna_sweeper
    from ctrbench.sweeper.storage import StorageError

    calls: list[str] = []
    monkeypatch.setattr(optuna_sweeper.time, "sleep", lambda s: calls.append(f"sleep {s}"))

    def busy(spec):
        calls.append("open")
        raise OperationalError("SELECT 1", {}, Exception("database is locked"))

    monkeypatch.setattr(optuna_sweeper, "make_storage", busy)
    sweeper = optuna_sweeper.OptunaSweeper(storage="sqlite:////tmp/x.db")
    with pytest.raises(
        StorageError, match=r"sqlite:////tmp/x.db cannot be opened \(4 attempts\): Operational"
    ):
        sweeper.open_study()
    assert calls == ["open", "sleep 1.0", "open", "sleep 2.0", "open", "sleep 3.0", "open"]

    calls.clear()

    def no_driver(spec):
        calls.append("open")
        raise StorageError("Optuna storage x needs the database driver 'psycopg2'")

    monkeypatch.setattr(optuna_sweeper, "make_storage", no_driver)
    with pytest.raises(StorageError, match="psycopg2"):
        sweeper.open_study()
    assert calls == ["open"]  # at once, no retry


def test_storage_errors_name_the_package_and_hide_the_password(monkeypatch) -> None:
    import sqlalchemy.engine

    from ctrbench.sweeper.storage import StorageError, display_storage, make_storage

    assert display_storage("mysql://me:secret@db.example/s") == "mysql://me:***@db.example/s"
    assert display_storage("/abs/study.log") == "/abs/study.log"
    with pytest.raises(StorageError, match="foo://x/y is not a usable URL: NoSuchModuleError"):
        make_storage("foo://x/y")

    def missing(url, **kwargs):  # what SQLAlchemy raises when the URL's driver module is absent
        try:
            import psycopg2_not_installed  # noqa: F401
        except ImportError as exc:
            raise ModuleNotFoundError("No module named 'psycopg2'", name="psycopg2") from exc

    monkeypatch.setattr(sqlalchemy.engine, "create_engine", missing)
    with pytest.raises(StorageError) as info:
        make_storage("postgresql+psycopg2://me:secret@nohost/db")
    assert str(info.value) == (
        "Optuna storage postgresql+psycopg2://me:***@nohost/db needs the database driver 'psycopg2', "
        "which is not installed: pip install psycopg2-binary"
    )
