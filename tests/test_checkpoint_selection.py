"""The checkpoint is the reported model: one selection rule for the numbers and the kept weights,
a job's own checkpoint folder, and a checkpoint cut short never recorded as ``ok``."""

from __future__ import annotations

import dataclasses
import errno
import json
import math
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from conftest import TINY

from ctrbench.engine import job
from ctrbench.engine.data import CTRDataModule
from ctrbench.engine.selection import LAST_EPOCH, CheckpointError, select_epoch, verify_checkpoint
from ctrbench.metrics import evaluate
from ctrbench.schema import Split

EPOCHS = ["trainer.max_epochs=3", "checkpoint=true"]


def test_select_epoch_rule() -> None:
    nan = math.nan
    history = [{"epoch": 0, "val_gauc": 0.6}, {"epoch": 1, "val_gauc": 0.7}, {"epoch": 2, "val_gauc": 0.7}]
    assert select_epoch(history) == (history[1], "val_gauc")  # the earliest of equal values
    mixed = [{"epoch": 0, "val_gauc": nan}, {"epoch": 1, "val_gauc": 0.55}, {"epoch": 2, "val_gauc": nan}]
    assert select_epoch(mixed) == (mixed[1], "val_gauc")
    undefined = [{"epoch": 0, "val_gauc": nan}, {"epoch": 1}, {"epoch": 2, "val_gauc": nan}]
    assert select_epoch(undefined) == (undefined[2], LAST_EPOCH)


def _test_metrics_of_checkpoint(cfg, data, path: Path) -> dict[str, float]:
    """Recompute the test metrics from the weights in ``path`` (a fresh model, the test split)."""
    task, _ = job.build_task(cfg, data)
    task.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["state_dict"])
    task.eval()
    dm = CTRDataModule(data, 256, 512, seed=0)
    labels, logits, groups = [], [], []
    with torch.no_grad():
        for batch in dm.val_dataloader()[1]:
            labels.append(batch[data.schema.label].numpy())
            logits.append(task(batch).double().numpy())
            groups.append(batch[data.schema.group].numpy())
    return evaluate(np.concatenate(labels), np.concatenate(logits), np.concatenate(groups))


def _without_usable_validation(data, how: str):
    if how == "empty":
        val = Split(
            {k: v[:0] for k, v in data.val.columns.items()},
            None if data.val.seq is None else data.val.seq[:0],
            None if data.val.end is None else data.val.end[:0],
        )
    else:  # every validation label positive: the GAUC of every user is undefined
        columns = dict(data.val.columns)
        columns[data.schema.label] = np.ones_like(columns[data.schema.label])
        val = dataclasses.replace(data.val, columns=columns)
    return dataclasses.replace(data, val=val, info=dict(data.info, fingerprint=f"no-val-{how}"))


@pytest.mark.parametrize("how", ["empty", "one_class"])
def test_without_a_usable_validation_metric_the_last_epoch_is_reported_and_kept(
    how, compose_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = compose_cfg([*TINY, *EPOCHS, "model=base", "optim.lr=0.01"])
    data = _without_usable_validation(job.load_data(cfg), how)
    monkeypatch.setattr(job, "load_data", lambda cfg: data)
    with caplog.at_level("WARNING", logger="ctrbench"):
        record = job.run(cfg, tmp_path)
    assert record["status"] == "ok", record.get("error")
    assert record["selected_by"] == LAST_EPOCH and record["best_epoch"] == 2
    said = [r.getMessage() for r in caplog.records if "the last epoch is reported" in r.getMessage()]
    assert len(said) == 1
    assert all(math.isnan(e.get("val_gauc", math.nan)) for e in record["epochs"])
    # the reported numbers are the last epoch's, and the checkpoint holds that epoch's weights
    assert record["test_auc"] == record["epochs"][-1]["test_auc"]
    path = Path(record["checkpoint"])
    assert torch.load(path, map_location="cpu", weights_only=True)["epoch"] == 2
    recomputed = _test_metrics_of_checkpoint(cfg, data, path)
    assert recomputed["auc"] == pytest.approx(record["test_auc"], abs=1e-6)
    assert recomputed["logloss"] == pytest.approx(record["test_logloss"], abs=1e-6)
    # epochs differ, so a checkpoint of another epoch would not reproduce the numbers
    assert len({round(e["test_logloss"], 6) for e in record["epochs"]}) == 3


def test_with_validation_the_checkpoint_holds_the_selected_epoch(compose_cfg, tmp_path: Path) -> None:
    cfg = compose_cfg([*TINY, *EPOCHS, "model=base", "optim.lr=0.01"])
    record = job.run(cfg, tmp_path)
    assert record["status"] == "ok" and record["selected_by"] == "val_gauc"
    best = max(record["epochs"], key=lambda e: e["val_gauc"])
    assert record["best_epoch"] == best["epoch"] and record["test_auc"] == best["test_auc"]
    path = Path(record["checkpoint"])
    assert torch.load(path, map_location="cpu", weights_only=True)["epoch"] == best["epoch"]
    recomputed = _test_metrics_of_checkpoint(cfg, job.load_data(cfg), path)
    assert recomputed["auc"] == pytest.approx(record["test_auc"], abs=1e-6)


def test_rerun_into_the_same_folder_starts_from_an_empty_checkpoint_folder(
    compose_cfg, tmp_path: Path
) -> None:
    cfg = compose_cfg([*TINY, "checkpoint=true", "model=lr", "resume=false"])
    first = job.run(cfg, tmp_path)
    stale = tmp_path / "checkpoints" / "epoch=7.ckpt"
    stale.write_bytes(b"left by someone else")
    second = job.run(cfg, tmp_path)
    assert first["status"] == second["status"] == "ok"
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["best.ckpt"]
    assert second["checkpoint"] == str(tmp_path / "checkpoints" / "best.ckpt")
    assert json.loads((tmp_path / "result.json").read_text())["checkpoint"] == second["checkpoint"]


def test_a_checkpoint_cut_short_fails_the_job_and_resume_reruns_it(
    compose_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = compose_cfg([*TINY, "checkpoint=true", "model=lr"])
    real_save = pl.Trainer.save_checkpoint

    def disk_full(self, filepath, *args, **kwargs):
        real_save(self, filepath, *args, **kwargs)
        data = Path(filepath).read_bytes()
        Path(filepath).write_bytes(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pl.Trainer, "save_checkpoint", disk_full)
    record = job.run(cfg, tmp_path)
    assert record["status"] == "failed"
    assert record["error"].startswith("CheckpointError: checkpoint of epoch 1 not written")
    assert "No space left on device" in record["error"] and "\n" not in record["error"]
    assert not list((tmp_path / "checkpoints").iterdir())  # neither best.ckpt nor the temporary file

    monkeypatch.undo()
    again = job.run(cfg, tmp_path)  # resume does not skip a failed job
    assert again["status"] == "ok" and again["started_at"] >= record["started_at"]


def test_a_checkpoint_truncated_silently_is_caught_before_ok(
    compose_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = compose_cfg([*TINY, "checkpoint=true", "model=lr"])
    real_save = pl.Trainer.save_checkpoint

    def truncated(self, filepath, *args, **kwargs):  # a filesystem that reports the error too late
        real_save(self, filepath, *args, **kwargs)
        data = Path(filepath).read_bytes()
        Path(filepath).write_bytes(data[: len(data) - 100])

    monkeypatch.setattr(pl.Trainer, "save_checkpoint", truncated)
    record = job.run(cfg, tmp_path)
    assert record["status"] == "failed" and record["error"].startswith("CheckpointError: checkpoint")


def test_resume_reruns_an_ok_job_whose_checkpoint_is_damaged(compose_cfg, tmp_path: Path) -> None:
    cfg = compose_cfg([*TINY, "checkpoint=true", "model=lr"])
    first = job.run(cfg, tmp_path)
    assert job.run(cfg, tmp_path)["started_at"] == first["started_at"]  # intact: skipped
    path = Path(first["checkpoint"])
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(CheckpointError):
        verify_checkpoint(path, first["best_epoch"])
    again = job.run(cfg, tmp_path)
    assert again["status"] == "ok"
    verify_checkpoint(Path(again["checkpoint"]), again["best_epoch"])  # trained and written again


@pytest.mark.parametrize("how", ["with_validation", "one_class"])
def test_predictions_of_the_reported_epoch_are_kept(
    how, compose_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ctrbench.engine.selection import read_predictions
    from ctrbench.metrics import auc, gauc

    cfg = compose_cfg([*TINY, *EPOCHS, "model=base", "optim.lr=0.01", "checkpoint=false"])
    data = job.load_data(cfg)
    if how == "one_class":
        data = _without_usable_validation(data, how)
        monkeypatch.setattr(job, "load_data", lambda cfg: data)
    record = job.run(cfg, tmp_path)
    assert record["status"] == "ok" and record["predictions"] == "predictions.npz"
    arrays = read_predictions(tmp_path / "predictions.npz")
    assert int(arrays["epoch"]) == record["best_epoch"]
    if how == "one_class":
        assert record["selected_by"] == LAST_EPOCH and record["best_epoch"] == 2
    n = len(data.test)
    assert arrays["test_prob"].dtype == np.float32 and arrays["test_label"].dtype == np.int8
    np.testing.assert_array_equal(arrays["test_row"], np.arange(n))
    np.testing.assert_array_equal(arrays["test_label"], data.test.columns[data.schema.label].astype(np.int8))
    np.testing.assert_array_equal(arrays["test_group"], data.test.columns[data.schema.group])
    logit = np.log(arrays["test_prob"].astype(np.float64) / (1 - arrays["test_prob"]))
    # the reported test numbers are recomputed from the kept predictions, without retraining
    assert auc(arrays["test_label"], logit) == pytest.approx(record["test_auc"], abs=1e-5)
    assert gauc(arrays["test_label"], logit, arrays["test_group"]) == pytest.approx(
        record["test_gauc"], abs=1e-5
    )
    assert len(arrays["val_prob"]) == len(data.val)
