"""``precise_stats``: Dice's and BatchNorm's evaluation statistics recomputed from training batches
with the current weights (DIN eq. 9's "moving averages over data", exact), checked against hand
computation and torch's ``update_bn``; training itself is untouched, runs without such layers are
unchanged bit for bit, and a resumed run ends where an uninterrupted one does."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import torch
from conftest import TINY
from torch import nn
from torch.optim.swa_utils import update_bn

from ctrbench.engine import job
from ctrbench.engine import precise_stats as ps
from ctrbench.engine.data import CTRDataModule
from ctrbench.engine.interrupt import JobInterrupted
from ctrbench.nn.dice import Dice


def _batches(n: int = 3, rows: int = 7, width: int = 4) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    # batches with different means: a moving average would weight them unequally
    return [torch.randn(rows, width, generator=g) * (i + 1) + 3 * i for i in range(n)]


def test_dice_statistics_are_the_average_of_the_batch_statistics() -> None:
    dice = Dice(4, momentum=0.01)
    model = nn.Sequential(nn.Identity(), dice, nn.Dropout(0.5))
    dice.running_mean.fill_(7.0)  # stale values: replaced, not blended
    model.train()
    batches = _batches()
    rng = torch.get_rng_state()
    seen = ps.recompute_statistics(model, iter(batches), model)
    assert seen == 3
    assert torch.equal(torch.get_rng_state(), rng)  # the dropout layer stayed in evaluation mode
    means = torch.stack([b.mean(0) for b in batches]).mean(0)
    variances = torch.stack([b.var(0, unbiased=True) for b in batches]).mean(0)
    torch.testing.assert_close(dice.running_mean, means)
    torch.testing.assert_close(dice.running_var, variances)
    assert dice.momentum == 0.01 and int(dice.num_batches_tracked) == 3
    assert model.training and dice.training  # modes restored


def test_batchnorm_statistics_match_torch_update_bn() -> None:
    torch.manual_seed(0)
    ours = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    reference = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    reference.load_state_dict(ours.state_dict())
    ours.eval()
    batches = _batches()
    ps.recompute_statistics(ours, iter(batches), ours)
    update_bn(batches, reference)
    torch.testing.assert_close(ours[1].running_mean, reference[1].running_mean)
    torch.testing.assert_close(ours[1].running_var, reference[1].running_var)
    assert ours[1].momentum == 0.1 and not ours.training


def test_a_model_without_statistics_layers_is_not_run() -> None:
    calls = []
    assert ps.recompute_statistics(nn.Linear(4, 1), iter(_batches()), calls.append) == 0
    assert calls == []


@pytest.mark.parametrize("value", [-1, 1.5, "many", True])
def test_bad_values_are_one_line(value: object) -> None:
    with pytest.raises(ValueError, match=r"^precise_stats=.* is invalid: .*integer >= 0 \(0: off\)$"):
        ps.precise_stats_batches(value)


def test_off_values() -> None:
    assert ps.precise_stats_batches(0) == 0 and ps.precise_stats_batches(False) == 0
    assert ps.precise_stats_batches(None) == 0 and ps.precise_stats_batches(3) == 3


RUN = [*TINY, "trainer.max_epochs=2", "checkpoint=true", "threads=1", "batch_size=64"]


def _dice_buffers(ckpt: Path) -> dict[str, torch.Tensor]:
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    return {k: v for k, v in state.items() if k.endswith(("running_mean", "running_var"))}


def test_dice_runs_train_alike_and_evaluate_with_recomputed_statistics(compose_cfg, tmp_path: Path) -> None:
    moving = job.run(compose_cfg([*RUN, "act=dice"]), tmp_path / "moving")
    precise = job.run(compose_cfg([*RUN, "act=dice", "precise_stats=2"]), tmp_path / "precise")
    assert moving["status"] == precise["status"] == "ok"
    # training uses batch statistics: the same losses; evaluation uses other statistics
    assert [e["train_loss"] for e in precise["epochs"]] == [e["train_loss"] for e in moving["epochs"]]
    assert precise["epochs"][0]["val_logloss"] != moving["epochs"][0]["val_logloss"]
    # the saved checkpoint holds the statistics recomputed from its own weights
    from ctrbench.scoring import load_run

    scorer, data = load_run(tmp_path / "precise")
    task_split = CTRDataModule(data, 64, 512, seed=1).splits["train"]
    saved = _dice_buffers(tmp_path / "precise" / "checkpoints" / "best.ckpt")
    assert saved
    rows = ps.sample_rows(len(task_split), 2 * 512, seed=1)
    ps.recompute_statistics(scorer.model, ps.sample_batches(task_split, rows, 512), lambda b: scorer.model(b))
    for name, value in scorer.model.state_dict().items():
        if name.endswith(("running_mean", "running_var")):
            torch.testing.assert_close(value, saved[f"model.{name}"], rtol=0, atol=1e-6)


def test_without_statistics_layers_a_run_is_unchanged(compose_cfg, tmp_path: Path) -> None:
    off = job.run(compose_cfg([*RUN, "act=prelu"]), tmp_path / "off")
    on = job.run(compose_cfg([*RUN, "act=prelu", "precise_stats=2"]), tmp_path / "on")
    for key in ("test_auc", "test_gauc", "test_logloss", "best_epoch"):
        assert on[key] == off[key], key


def test_a_resumed_run_ends_as_an_uninterrupted_one(
    compose_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = compose_cfg([*RUN, "act=dice", "precise_stats=2", "trainer.max_epochs=3"])
    full = job.run(cfg, tmp_path / "full")

    class StopAfterFirstEpoch(ps.PreciseStatistics):  # SIGTERM as the second epoch starts
        def on_train_epoch_start(self, trainer, pl_module) -> None:  # noqa: ANN001
            if trainer.current_epoch == 1:
                raise JobInterrupted(signal.SIGTERM)

    monkeypatch.setattr(job, "PreciseStatistics", StopAfterFirstEpoch)
    with pytest.raises(JobInterrupted):
        job.run(cfg, tmp_path / "run")
    monkeypatch.undo()
    resumed = job.run(cfg, tmp_path / "run")
    assert resumed["status"] == "ok" and resumed["resumed_from"]
    for key in ("test_auc", "test_gauc", "test_logloss", "best_epoch"):
        assert resumed[key] == full[key], key
