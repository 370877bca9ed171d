"""Export: a traced module + manifest gives the checkpoint's probabilities, without ctrbench's model code."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY

from ctrbench import export
from ctrbench.engine import job
from ctrbench.scoring import Scorer


@pytest.mark.parametrize(
    "overrides", [["model=din"], ["model=dien", "reg=filter", "reg.min_count=3"]], ids=["din", "dien-filter"]
)
def test_export_scores_like_the_checkpoint(compose_cfg, tmp_path: Path, overrides: list[str]) -> None:
    cfg = compose_cfg([*TINY, *overrides, "checkpoint=true"])
    assert job.run(cfg, tmp_path)["status"] == "ok"
    folder = export.export_run(tmp_path, tmp_path / "exp", candidates=64)
    manifest = json.loads((folder / export.MANIFEST).read_text())
    assert manifest["candidates"] == 64 and manifest["config"]["model"]["name"] == overrides[0][6:]
    assert {f["name"] for f in manifest["schema"]["fields"]} >= {"item", "hist_item"}

    rng = np.random.default_rng(0)
    scorer = Scorer.from_run(tmp_path)
    schema = scorer.schema  # (the filter adds an OOV row: ids below it)
    user = {
        "user": 3,
        "user_seg": 1,
        "hist_item": rng.integers(1, schema["item"].vocab - 1, 7).tolist(),  # shorter than max_len
        "hist_cat": rng.integers(1, schema["cat"].vocab - 1, 7).tolist(),
    }
    cands = {  # more candidates than the traced shape: two chunks, the last padded
        "item": rng.integers(1, schema["item"].vocab - 1, 100),
        "cat": rng.integers(1, schema["cat"].vocab - 1, 100),
        "ctx": rng.integers(1, schema["ctx"].vocab - 1, 100),
    }
    expected = scorer.score(user, cands)
    got = export.ExportedScorer.load(folder).score(user, cands)
    assert got.shape == (100,)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_export_of_a_folder_without_a_run_is_one_line(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        export.main([str(tmp_path)])
    assert "no readable result.json" in str(exit_info.value) and "\n" not in str(exit_info.value)
