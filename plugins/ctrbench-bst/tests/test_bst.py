"""The plugin package's own tests: discovered by ctrbench, correct, and swept with the built-ins."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ctrbench import registry

TINY = ["+experiment=smoke", "dataset.n_users=150", "dataset.n_items=200", "logger=none"]


def _schema():
    return registry.build("dataset", "synthetic", {"n_users": 150, "n_items": 200}).load().schema


def test_ctrbench_discovers_the_plugins_and_the_preset() -> None:
    assert "bst" in registry.names("model") and "swish" in registry.names("act")
    assert registry.specs("model")["bst"].dist == "ctrbench-bst"
    assert "bst" in registry.config_packages()


def test_swish_is_x_sigmoid_beta_x() -> None:
    act = registry.build("act", "swish", {"beta_init": 2.0})(3)
    x = torch.tensor([[-1.0, 0.0, 2.0]])
    expected = torch.tensor([[-1.0 / (1.0 + 2.718281828**2), 0.0, 2.0 / (1.0 + 2.718281828**-4)]])
    assert torch.allclose(act(x), expected, atol=1e-6)


def test_bst_ignores_padding_and_depends_on_the_history() -> None:
    schema = _schema()
    torch.manual_seed(0)
    model = registry.build("model", "bst", {}, schema=schema, activation=registry.build("act", "prelu", {}))
    model.eval()
    n, length = 4, 6
    batch = {f.name: torch.randint(1, f.vocab, (n,)) for f in schema.categorical}
    batch["hist_item"] = torch.randint(1, schema["hist_item"].vocab, (n, length))
    batch["hist_cat"] = torch.randint(1, schema["hist_cat"].vocab, (n, length))
    batch["hist_len"] = torch.tensor([6, 3, 1, 0])
    for name in ("hist_item", "hist_cat"):
        batch[name][torch.arange(length)[None, :] >= batch["hist_len"][:, None]] = 0
    with torch.no_grad():
        out = model(batch)
        wider = dict(batch)
        for name in ("hist_item", "hist_cat"):
            wider[name] = torch.cat([batch[name], torch.zeros(n, 2, dtype=torch.long)], 1)
        assert out.shape == (n,) and torch.isfinite(out).all()
        assert torch.allclose(model(wider), out, atol=1e-5)  # extra padding changes nothing
        other = dict(batch, hist_item=batch["hist_item"].flip(0))
        assert not torch.allclose(model(other)[:2], out[:2])  # the history matters


def test_mixed_sweep_with_built_in_models_and_activations(tmp_path: Path) -> None:
    env = dict(os.environ, WANDB_MODE="disabled", HYDRA_FULL_ERROR="0")
    proc = subprocess.run(
        [sys.executable, "-m", "ctrbench", "-m", "model=din,bst", "act=prelu,swish", *TINY,
         f"hydra.sweep.dir={tmp_path}"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = list(csv.DictReader((tmp_path / "summary.csv").open()))
    assert len(rows) == 4
    assert {r["status"] for r in rows} == {"ok"}
    assert all(0.0 < float(r["auc_mean"]) < 1.0 for r in rows)


def test_the_contributed_preset_composes(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ctrbench", "+experiment=bst_vs_din", "--cfg", "hydra"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "model: base,din,bst" in proc.stdout


@pytest.mark.parametrize("name", ["bst"])
def test_bad_heads_is_one_line(name: str) -> None:
    with pytest.raises(ValueError, match="must divide the token width"):
        registry.build(
            "model", name, {"heads": 5}, schema=_schema(), activation=registry.build("act", "prelu", {})
        )
