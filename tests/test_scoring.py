"""The scoring API (one user, many candidates) against the training-time forward pass."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY

from ctrbench.engine import job
from ctrbench.engine.data import ArrayBatches
from ctrbench.scoring import Scorer


@pytest.mark.parametrize(
    "overrides",
    [["model=din"], ["model=dien", "reg=filter", "reg.min_count=3"], ["model=base", "act=dice"]],
    ids=["din", "dien-filter", "base-dice"],
)
def test_scorer_matches_the_forward_pass(compose_cfg, tmp_path: Path, overrides: list[str]) -> None:
    cfg = compose_cfg([*TINY, *overrides, "checkpoint=true"])
    assert job.run(cfg, tmp_path)["status"] == "ok"
    scorer = Scorer.from_run(tmp_path)
    data = job.load_data(cfg)
    test = data.test
    # the rows of one impression: same user, same history end, several candidates
    key = test.seq * 10_000 + test.end
    values, counts = np.unique(key, return_counts=True)
    rows = np.flatnonzero(key == values[np.argmax(counts)])
    assert len(rows) >= 2
    batch = ArrayBatches(test, data.schema, data.sequences)[torch.as_tensor(rows)]
    task, _ = job.build_task(cfg, data)
    task.load_state_dict(torch.load(tmp_path / "checkpoints" / "best.ckpt", weights_only=False)["state_dict"])
    task.eval()
    with torch.no_grad():
        expected = torch.sigmoid(task(batch)).numpy()

    length = int(batch["hist_len"][0])
    user = {
        "user": int(batch["user"][0]),
        "user_seg": int(batch["user_seg"][0]),
        "hist_item": batch["hist_item"][0, :length].tolist(),
        "hist_cat": batch["hist_cat"][0, :length].tolist(),
    }
    candidates = {k: batch[k].numpy() for k in ("item", "cat", "ctx")}
    got = scorer.score(user, candidates)
    assert got.shape == (len(rows),)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    # 200 candidates in one call
    many = {k: np.resize(v, 200) for k, v in candidates.items()}
    assert scorer.score(user, many).shape == (200,)


def test_from_run_without_checkpoint_is_one_clear_error(compose_cfg, tmp_path: Path) -> None:
    cfg = compose_cfg([*TINY, "model=lr"])  # the smoke experiment keeps no checkpoint
    job.run(cfg, tmp_path)
    with pytest.raises(FileNotFoundError, match="no checkpoint at .*checkpoint=false"):
        Scorer.from_run(tmp_path)
