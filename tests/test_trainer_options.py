"""Every pytorch_lightning.Trainer argument is settable as trainer.NAME=VALUE; a misspelt one is one line."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
from conftest import TINY, run_cli
from omegaconf import OmegaConf

from ctrbench.engine import trainer_options
from ctrbench.engine.trainer_options import SET_BY_CTRBENCH, TrainerOptionError, check_trainer_overrides
from ctrbench.launcher import LaunchError

TRAINER_ARGS = [n for n in inspect.signature(pl.Trainer.__init__).parameters if n != "self"]


def test_trainer_arguments_are_the_signatures() -> None:
    assert list(trainer_options.trainer_arguments()) == TRAINER_ARGS
    assert {"limit_train_batches", "gradient_clip_val", "precision", "max_time"} <= set(TRAINER_ARGS)


def test_a_misspelt_trainer_argument_is_one_line_naming_the_close_matches() -> None:
    with pytest.raises(TrainerOptionError) as info:
        check_trainer_overrides(["model=din", "trainer.limit_trian_batches=2"])
    assert isinstance(info.value, LaunchError)  # the CLI prints it as one line, exit 2
    assert str(info.value) == (
        "unknown Trainer argument 'limit_trian_batches' in 'trainer.limit_trian_batches=2' "
        "(did you mean: limit_train_batches, limit_val_batches, limit_test_batches, limit_predict_batches?)"
    )
    with pytest.raises(TrainerOptionError, match="'zzz' in '\\+\\+trainer.zzz=1' \\(see pytorch_lightning"):
        check_trainer_overrides(["++trainer.zzz=1"])
    with pytest.raises(
        TrainerOptionError, match="'max_epoch' in '~trainer.max_epoch' \\(did you mean: max_epochs"
    ):
        check_trainer_overrides(["~trainer.max_epoch"])


def test_arguments_ctrbench_passes_itself_are_refused_with_the_alternative() -> None:
    for name in SET_BY_CTRBENCH:
        assert name in TRAINER_ARGS
        with pytest.raises(TrainerOptionError, match=f"^trainer.{name} is set by ctrbench: "):
            check_trainer_overrides([f"trainer.{name}=x"])


def test_valid_and_unrelated_overrides_pass() -> None:
    check_trainer_overrides(
        [
            "-m",
            "--cfg",
            "job",
            "trainer=default",
            "trainer.limit_train_batches=2",
            "+trainer.gradient_clip_val=5",
            "trainer.max_epochs=1,2",
            "model.trainer_like=1",
            "hydra.sweeper.params.trainer.max_epochs=choice(1,2)",
        ]
    )


def test_every_trainer_argument_composes_without_plus(compose_cfg) -> None:
    """Before: only the keys of conf/trainer/default.yaml could be set (Key '...' is not in struct)."""
    settable = [n for n in TRAINER_ARGS if n not in SET_BY_CTRBENCH]
    cfg = compose_cfg(
        [*TINY, *(f"trainer.{name}=null" for name in settable), "trainer.limit_train_batches=20"]
    )
    assert set(settable) <= set(cfg.trainer)
    assert cfg.trainer.limit_train_batches == 20 and cfg.trainer.max_epochs is None
    plain = compose_cfg(TINY)  # only what is set: ctrbench's defaults and the preset's
    assert "limit_train_batches" not in plain.trainer and plain.trainer.max_epochs == 1


def test_cli_limit_train_batches_limits_the_batches(tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = run_cli(
        [*TINY, "batch_size=256", "trainer.limit_train_batches=2", f"hydra.run.dir={run}"], tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((run / "result.json").read_text())
    assert record["status"] == "ok"
    assert record["config"]["trainer"]["limit_train_batches"] == 2
    assert round(record["samples_per_s"] * record["train_loop_s"]) == 2 * 256  # 2 batches of 256 rows
    assert len(record["epochs"]) == 1


def test_cli_misspelt_trainer_argument_is_one_line(tmp_path: Path) -> None:
    proc = run_cli([*TINY, "trainer.limit_trian_batches=2"], tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("ctrbench: error: unknown Trainer argument 'limit_trian_batches'")
    assert "did you mean: limit_train_batches" in lines[0]
    assert not (tmp_path / "results").exists()  # nothing ran


def test_cli_cfg_job_shows_the_override(tmp_path: Path) -> None:
    proc = run_cli(
        [*TINY, "trainer.limit_train_batches=2", "trainer.gradient_clip_val=0.5", "--cfg", "job"], tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    trainer = OmegaConf.create(proc.stdout).trainer
    assert trainer.limit_train_batches == 2 and trainer.gradient_clip_val == 0.5 and trainer.max_epochs == 1
