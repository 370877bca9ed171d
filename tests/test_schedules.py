"""Learning-rate schedules (``optim.scheduler``): the rate changes exactly at the configured steps
or epochs, on every parameter group of the combined sparse+dense optimizer, and a run resumed from
a checkpoint continues the schedule where it stopped."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
from conftest import TINY

from ctrbench.engine import job
from ctrbench.engine.data import CTRDataModule
from ctrbench.engine.optim import OptimConfig, SplitOptimizer
from ctrbench.engine.schedules import SchedulerConfig

BATCHES = 4  # training batches per epoch


class RecordLR(pl.Callback):
    """The rate of every parameter group at each training step (the rate that step uses)."""

    def __init__(self) -> None:
        self.lrs: list[list[float]] = []
        self.optimizer_type = ""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
        optimizer = trainer.optimizers[0]
        self.optimizer_type = type(optimizer).__name__
        self.lrs.append([g["lr"] for g in optimizer.param_groups])


def _fit(cfg, tmp_path: Path, max_epochs: int, ckpt_in: Path | None = None, ckpt_out: Path | None = None):
    data = job.load_data(cfg)
    task, _ = job.build_task(cfg, data)
    dm = CTRDataModule(data, cfg.batch_size, cfg.eval_batch_size, seed=cfg.seed)
    record = RecordLR()
    trainer = pl.Trainer(
        max_epochs=max_epochs,
        limit_train_batches=BATCHES,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[record],
        default_root_dir=str(tmp_path),
        accelerator="cpu",
    )
    trainer.fit(task, datamodule=dm, ckpt_path=str(ckpt_in) if ckpt_in else None)
    if ckpt_out is not None:
        trainer.save_checkpoint(str(ckpt_out))
    return record


SPARSE = ["model=base", "optim.sparse=true", "optim.lr=0.5", "batch_size=32"]


def _rates(record: RecordLR) -> list[float]:
    """One rate per step; every parameter group (dense and sparse tables) holds the same one."""
    assert all(len(set(groups)) == 1 and len(groups) >= 2 for groups in record.lrs), record.lrs[:3]
    return [groups[0] for groups in record.lrs]


def test_step_schedule_drops_the_rate_at_the_configured_steps(compose_cfg, tmp_path: Path) -> None:
    sched = ["optim.scheduler.name=step", "optim.scheduler.interval=step", "optim.scheduler.milestones=[3,6]"]
    record = _fit(compose_cfg([*TINY, *SPARSE, *sched, "optim.scheduler.gamma=0.1"]), tmp_path, 2)
    assert record.optimizer_type == "SplitOptimizer"
    # steps 0-2 at 0.5, 3-5 at 0.05, 6-7 at 0.005 (the rate is multiplied by 0.1 after 3 and 6 steps)
    assert _rates(record) == pytest.approx([0.5] * 3 + [0.05] * 3 + [0.005] * 2)


def test_exponential_schedule_per_epoch(compose_cfg, tmp_path: Path) -> None:
    sched = ["optim.scheduler.name=exponential", "optim.scheduler.interval=epoch"]
    sched += ["optim.scheduler.gamma=0.5"]
    record = _fit(compose_cfg([*TINY, *SPARSE, *sched]), tmp_path, 3)
    assert _rates(record) == pytest.approx([0.5] * 4 + [0.25] * 4 + [0.125] * 4)


def test_no_schedule_keeps_the_rate(compose_cfg, tmp_path: Path) -> None:
    record = _fit(compose_cfg([*TINY, *SPARSE]), tmp_path, 2)
    assert _rates(record) == pytest.approx([0.5] * 8)


def test_a_resumed_run_continues_the_schedule(compose_cfg, tmp_path: Path) -> None:
    sched = ["optim.scheduler.name=step", "optim.scheduler.interval=step"]
    sched += ["optim.scheduler.milestones=[2,6,9]"]
    cfg = compose_cfg([*TINY, *SPARSE, *sched, "optim.scheduler.gamma=0.5"])
    whole = _rates(_fit(cfg, tmp_path / "whole", 3))
    assert whole == pytest.approx([0.5] * 2 + [0.25] * 4 + [0.125] * 3 + [0.0625] * 3)
    ckpt = tmp_path / "epoch1.ckpt"
    first = _rates(_fit(cfg, tmp_path / "a", 1, ckpt_out=ckpt))
    rest = _rates(_fit(cfg, tmp_path / "b", 3, ckpt_in=ckpt))
    assert first + rest == pytest.approx(whole)


@pytest.mark.parametrize(
    ("node", "message"),
    [
        ({"name": "foo"}, "optim.scheduler.name='foo' is invalid: choose one of none, step, exponential"),
        ({"name": "step", "interval": "batch"}, "optim.scheduler.interval='batch' is invalid: choose"),
        ({"name": "step", "milestones": [0, 3]}, "optim.scheduler.milestones=[0, 3] is invalid"),
        ({"name": "step", "gamma": -1}, "optim.scheduler.gamma=-1 is invalid: a number above 0"),
        ({"name": "step", "gama": 0.5}, "optim.scheduler.gama is not an option"),
    ],
)
def test_bad_values_are_one_line(node: dict, message: str) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("[", r"\[").replace("]", r"\]")) as err:
        OptimConfig(scheduler=node)
    assert "\n" not in str(err.value)


def test_scheduler_default_is_none() -> None:
    assert OptimConfig().scheduler == SchedulerConfig()
    assert SplitOptimizer  # the combined optimizer the schedule runs over (checked above)


def test_official_presets(compose_cfg, tmp_path: Path) -> None:
    """din/train.py: SGD 1.0, 0.1 from step 336000, clipping at global norm 5; dien script/train.py:
    Adam 0.001, constant (its halving is commented out)."""
    din = compose_cfg(["+experiment=din_table3", "+optim_preset=din_official"])
    optim = OptimConfig(**job._options(din.optim))
    assert (optim.name, optim.lr) == ("sgd", 1.0)
    assert optim.scheduler == SchedulerConfig("step", "step", [336000], 0.1)
    assert (din.trainer.gradient_clip_val, din.trainer.gradient_clip_algorithm) == (5, "norm")
    dien = compose_cfg(["+experiment=dien_table2", "+optim_preset=dien_official"])
    assert OptimConfig(**job._options(dien.optim)) == OptimConfig(name="adam", lr=0.001)
    record = job.run(compose_cfg([*TINY, "model=base", "+optim_preset=din_official"]), tmp_path)
    assert record["status"] == "ok", record.get("error")


def test_the_rate_is_logged_per_step_recorded_per_epoch_and_drawn(compose_cfg, tmp_path: Path) -> None:
    """LearningRateMonitor writes every step's rate to the logger; the history holds the rate of each
    epoch's last step; curves.png gets an lr panel."""
    sched = ["optim.scheduler.name=exponential", "optim.scheduler.gamma=0.5", "trainer.max_epochs=3"]
    tiny = [a for a in TINY if a != "logger=none"]
    limits = [f"+trainer.limit_train_batches={BATCHES}", "trainer.log_every_n_steps=1"]
    cfg = compose_cfg([*tiny, "logger=csv", "model=lr", *sched, *limits])
    record = job.run(cfg, tmp_path)
    assert record["status"] == "ok", record.get("error")
    assert [e["lr"] for e in record["epochs"]] == pytest.approx([1e-3, 5e-4, 2.5e-4])
    (metrics,) = tmp_path.rglob("metrics.csv")
    header, *rows = [line.split(",") for line in metrics.read_text().splitlines()]
    col = header.index("lr_schedule")
    logged = [float(r[col]) for r in rows if r[col]]
    assert logged == pytest.approx([1e-3] * 4 + [5e-4] * 4 + [2.5e-4] * 4)
    from ctrbench.results.curves import curve_series, plot_curves

    assert curve_series([record], "lr")
    assert plot_curves([record], tmp_path / "curves.png") is not None
    assert not curve_series([dict(record, epochs=[{"epoch": 0, "train_loss": 1.0}])], "lr")


def test_the_combined_optimizer_checkpoints_its_sparse_state(compose_cfg, tmp_path: Path) -> None:
    """Each parameter's optimizer state stays in the part that owns it, so the checkpoint saves and
    a run resumes from it (also without a schedule)."""
    cfg = compose_cfg([*TINY, *SPARSE])
    _fit(cfg, tmp_path / "a", 1, ckpt_out=tmp_path / "a.ckpt")
    assert _rates(_fit(cfg, tmp_path / "b", 2, ckpt_in=tmp_path / "a.ckpt")) == pytest.approx([0.5] * 4)
