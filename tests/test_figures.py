"""The inspection figures: PNGs of the expected size, drawn from the trained model's own numbers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import TINY

from ctrbench import figures
from ctrbench.engine import job
from ctrbench.scoring import load_run


@pytest.fixture(scope="module")
def runs(tmp_path_factory, request):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from ctrbench import registry
    from ctrbench.cli import conf_dir

    registry.register_configs()
    GlobalHydra.instance().clear()
    out = {}
    with initialize_config_dir(version_base="1.3", config_dir=str(conf_dir())):
        for name in ("din", "dien"):
            folder = tmp_path_factory.mktemp(name)
            cfg = compose("config", overrides=[*TINY, f"model={name}", "checkpoint=true"])
            assert job.run(cfg, folder)["status"] == "ok"
            out[name] = folder
    GlobalHydra.instance().clear()
    return out


def _size(path: Path) -> tuple[int, int]:
    import matplotlib.image

    image = matplotlib.image.imread(str(path))
    return image.shape[1], image.shape[0]


@pytest.mark.parametrize("kind,model", [("attention", "din"), ("embeddings", "din"), ("evolution", "dien")])
def test_figure_is_a_png_of_the_expected_size(runs, tmp_path: Path, kind: str, model: str) -> None:
    path = figures.draw(kind, runs[model], tmp_path)
    assert path.stat().st_size > 5000
    assert _size(path) == (int(figures.SIZE[0] * figures.DPI), int(figures.SIZE[1] * figures.DPI))


def test_figure_data_comes_from_the_model(runs, tmp_path: Path) -> None:
    scorer, data = load_run(runs["din"])
    batch = figures.pick_row(data, None)
    first = figures.attention_figure(scorer, batch, tmp_path / "a.png").read_bytes()
    with torch.no_grad():
        scorer.model.attention.score.rest.net[-1].bias.add_(1.0)  # every raw weight moves up by 1
    second = figures.attention_figure(scorer, batch, tmp_path / "b.png").read_bytes()
    assert first != second


def test_wrong_model_for_a_figure_is_one_line(runs) -> None:
    with pytest.raises(SystemExit) as exit_info:
        figures.main(["evolution", str(runs["din"])])
    assert "needs a DIEN-family model" in str(exit_info.value)


def test_tsne_and_pca_inputs_come_from_the_model(runs, tmp_path: Path) -> None:
    scorer, data = load_run(runs["din"])
    batch = figures.pick_row(data, None)
    before = figures.embedding_figure(scorer, data, batch, tmp_path / "e1.png").read_bytes()
    with torch.no_grad():
        scorer.model.embeddings.tables["item"].weight.mul_(-3.0)
    assert figures.embedding_figure(scorer, data, batch, tmp_path / "e2.png").read_bytes() != before

    scorer, data = load_run(runs["dien"])
    batch = figures.pick_row(data, None)
    before = figures.evolution_figure(scorer, data, batch, tmp_path / "p1.png").read_bytes()
    with torch.no_grad():
        scorer.model.interest.evolution.weight_hh.mul_(2.0)
    assert figures.evolution_figure(scorer, data, batch, tmp_path / "p2.png").read_bytes() != before
