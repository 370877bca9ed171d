"""Dice (DIN eq. 9): batch statistics in training, moving averages at evaluation, any input rank."""

from __future__ import annotations

import math

import pytest
import torch

from ctrbench import registry
from ctrbench.nn.dice import Dice


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_hand_computed_training_output() -> None:
    dice = Dice(2)
    with torch.no_grad():
        dice.alpha.copy_(torch.tensor([0.5, -1.0]))
    x = torch.tensor([[1.0, 0.0], [3.0, 2.0]])
    # per column: mean (2, 1), biased variance (1, 1), so (s − E[s]) / sqrt(Var[s]) = ∓1;
    # p(∓1) = 0.268941, 0.731059 and f(s) = s·(p + (1 − p)·α)
    lo, hi = sigmoid(-1.0), sigmoid(1.0)
    expected = torch.tensor(
        [
            [1.0 * (lo + (1 - lo) * 0.5), 0.0],
            [3.0 * (hi + (1 - hi) * 0.5), 2.0 * (hi + (1 - hi) * -1.0)],
        ]
    )
    assert torch.allclose(expected, torch.tensor([[0.634471, 0.0], [2.596588, 0.924234]]), atol=1e-6)
    assert torch.allclose(dice(x), expected, atol=1e-6)
    # the first batch becomes the running statistics (unbiased variance, like BatchNorm)
    assert dice.running_mean.tolist() == pytest.approx([2.0, 1.0])
    assert dice.running_var.tolist() == pytest.approx([2.0, 2.0])


def test_alpha_zero_at_init_gives_a_smooth_gate() -> None:
    dice = Dice(1)
    assert dice.alpha.tolist() == [0.0]
    x = torch.tensor([[-2.0], [0.0], [2.0]])  # mean 0, variance 8/3
    z = 2.0 / math.sqrt(8 / 3)
    assert dice(x).squeeze(1).tolist() == pytest.approx([-2.0 * sigmoid(-z), 0.0, 2.0 * sigmoid(z)], rel=1e-6)


def test_eval_uses_running_statistics_train_uses_the_batch() -> None:
    torch.manual_seed(0)
    dice = Dice(3, alpha_init=0.2)
    for _ in range(5):
        dice(torch.randn(16, 3) * 2 + 1)
    x0 = torch.tensor([[0.3, -1.0, 2.0]])
    a, b = torch.cat([x0, torch.randn(7, 3)]), torch.cat([x0, torch.randn(7, 3) + 5])
    dice.eval()
    assert torch.equal(dice(a)[0], dice(b)[0])
    p = torch.sigmoid((x0 - dice.running_mean) / torch.sqrt(dice.running_var + 1e-8))
    assert torch.allclose(dice(x0), x0 * (p + (1 - p) * 0.2))
    frozen = dice.running_mean.clone()
    dice(b)
    assert torch.equal(dice.running_mean, frozen)  # evaluation never updates the statistics
    dice.train()
    assert not torch.allclose(dice(a)[0], dice(b)[0])


def test_running_statistics_follow_the_momentum() -> None:
    dice = Dice(1, momentum=0.25)
    batches = [torch.tensor([[m - 1.0], [m + 1.0]]) for m in (4.0, 0.0, 8.0, 2.0, 6.0, -2.0)]
    mean, var = 0.0, 1.0
    for t, x in enumerate(batches, start=1):
        dice(x)
        m = max(0.25, 1.0 / t)  # cumulative average until 1/t drops below the momentum
        mean, var = (1 - m) * mean + m * x.mean().item(), (1 - m) * var + m * 2.0
        assert dice.running_mean.item() == pytest.approx(mean)
        assert dice.running_var.item() == pytest.approx(var)
    assert int(dice.num_batches_tracked) == 6
    # after warm-up the update is exactly running ← 0.75·running + 0.25·batch
    before = dice.running_mean.item()
    dice(torch.tensor([[9.0], [11.0]]))
    assert dice.running_mean.item() == pytest.approx(0.75 * before + 0.25 * 10.0)


def test_three_dim_input_equals_the_flattened_two_dim_computation() -> None:
    torch.manual_seed(1)
    x = torch.randn(4, 5, 3)
    d3, d2 = Dice(3, alpha_init=0.3), Dice(3, alpha_init=0.3)
    out3 = d3(x)
    assert out3.shape == (4, 5, 3)
    assert torch.allclose(out3, d2(x.reshape(20, 3)).reshape(4, 5, 3))
    assert torch.allclose(d3.running_mean, d2.running_mean) and torch.allclose(d3.running_var, d2.running_var)
    assert torch.allclose(d3.running_mean, x.reshape(20, 3).mean(0))  # statistics over both leading dims
    d3.eval(), d2.eval()
    assert torch.allclose(d3(x), d2(x.reshape(20, 3)).reshape(4, 5, 3))


def test_single_row_batch_is_finite_and_leaves_running_statistics() -> None:
    dice = Dice(2)
    out = dice(torch.tensor([[1.0, -3.0]]))
    assert torch.isfinite(out).all()
    assert dice.running_mean.tolist() == [0.0, 0.0] and int(dice.num_batches_tracked) == 0
    assert dice(torch.empty(0, 2)).shape == (0, 2)


def test_alpha_is_learned() -> None:
    dice = Dice(2)
    dice(torch.tensor([[1.0, -2.0], [-3.0, 4.0]])).sum().backward()
    assert dice.alpha.grad is not None and dice.alpha.grad.abs().sum() > 0


def test_factory_builds_dice_by_name_with_options() -> None:
    factory = registry.build("act", "dice", {})
    module = factory(8)
    assert isinstance(module, Dice)
    assert module.eps == 1e-8 and module.momentum == 0.01 and module.alpha.tolist() == [0.0] * 8
    module = registry.build("act", "dice", {"momentum": 0.1, "alpha_init": 0.25})(4, 3)
    assert module.momentum == 0.1 and module.alpha.tolist() == [0.25] * 4
    assert module(torch.randn(2, 6, 4)).shape == (2, 6, 4)
    with pytest.raises(registry.PluginError, match="no option"):
        registry.build("act", "dice", {"decay": 0.9})
