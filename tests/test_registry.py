"""Entry-point discovery, broken and duplicate plugins, config registration."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import make_dist

from ctrbench import registry
from ctrbench.cli import check_overrides


def test_builtins_are_entry_points() -> None:
    assert {"lr", "base"} <= set(registry.names("model"))
    assert "synthetic" in registry.names("dataset")
    assert "prelu" in registry.names("act")
    assert "none" in registry.names("reg")
    assert registry.get("model", "base").dist == "ctrbench"


def test_fake_distribution_is_discovered_lazily(fake_plugins: Path) -> None:
    assert "mean" in registry.names("model")
    spec = registry.get("model", "mean")
    assert (spec.dist, spec.version) == ("fakeplugin", "0.1")
    assert "fakeplugin.mean" not in sys.modules  # listing imports nothing
    cls = registry.load("model", "mean")
    assert cls.__name__ == "MeanModel" and "fakeplugin.mean" in sys.modules


def test_broken_plugin_is_reported_and_others_still_work(fake_plugins: Path) -> None:
    with pytest.raises(registry.BrokenPluginError, match=r"kaput.*fakeplugin 0\.1.*ImportError.*kaput needs"):
        registry.load("model", "kaput")
    rows = {(r["kind"], r["name"]): r for r in registry.plugin_rows()}
    assert rows[("model", "kaput")]["status"].startswith("broken: ImportError")
    assert rows[("model", "kaput")]["dist"] == "fakeplugin"
    assert rows[("model", "mean")]["status"] == "ok"
    assert rows[("model", "base")]["status"] == "ok"
    act = registry.build("act", "prelu", {"init": 0.1})
    assert act(3).weight.detach()[0].item() == pytest.approx(0.1)


def test_duplicate_name_names_both_distributions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_dist(
        tmp_path,
        "otherplugin",
        "[ctrbench.models]\nbase = otherplugin.m:M\n",
        {"otherplugin/__init__.py": ""},
        "2.0",
    )
    monkeypatch.syspath_prepend(str(root))
    registry.refresh()
    try:
        with pytest.raises(registry.DuplicatePluginError) as err:
            registry.names("model")
        message = str(err.value)
        assert "ctrbench" in message and "otherplugin 2.0" in message and "'base'" in message
        assert "\n" not in message
    finally:
        registry.refresh()


def test_unknown_name_lists_installed_choices() -> None:
    with pytest.raises(registry.UnknownPluginError, match=r"unknown model 'nope' \(installed: .*base.*lr"):
        check_overrides(["model=nope"])
    with pytest.raises(registry.UnknownPluginError, match="unknown act 'relu6'"):
        check_overrides(["-m", "act=prelu,relu6"])
    check_overrides(["-m", "model=lr,base", "model.emb_dim=8", "--cfg", "job"])  # valid: no error


def test_build_rejects_unknown_option() -> None:
    with pytest.raises(
        registry.PluginError, match=r"model 'base' has no option emb_size \(options: .*emb_dim"
    ):
        registry.make_config("model", "base", {"emb_size": 3})


def test_plugin_defaults_become_overridable_config(compose_cfg) -> None:
    cfg = compose_cfg()
    assert cfg.model.name == "din" and cfg.model.emb_dim == 18 and list(cfg.model.mlp) == [200, 80]
    assert list(cfg.model.att_mlp) == [80, 40] and cfg.model.att_softmax is False
    assert cfg.dataset.name == "synthetic" and cfg.act.name == "prelu" and cfg.reg.name == "none"
    cfg = compose_cfg(["model=lr", "model.use_behaviours=false", "act.init=0.5"])
    assert cfg.model.name == "lr" and cfg.model.use_behaviours is False and cfg.act.init == 0.5
    cfg = compose_cfg(["model.emb_dim=8"])
    assert cfg.model.emb_dim == 8
    with pytest.raises(Exception, match="emb_dim"):  # typed: OmegaConf refuses a non-integer
        compose_cfg(["model.emb_dim=abc"])


def test_thin_variant_configures_its_plugin(compose_cfg) -> None:
    cfg = compose_cfg(["model=din_official", "model.att_mlp=[16]"])
    assert cfg.model.name == "din" and cfg.model.att_softmax is True and cfg.model.att_features == "official"
    assert list(cfg.model.att_mlp) == [16]
