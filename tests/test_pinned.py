"""Speed work must not move results: short seeded runs reproduce numbers pinned before it.

The values were recorded from the same runs (tiny synthetic data, 2 epochs, seed 3, one CPU
thread); any change to the models, the data path or the engine that alters training beyond
floating-point noise fails here. Re-pin only for a deliberate change of what is computed.
"""

from __future__ import annotations

import pytest
import torch
from conftest import TINY

PINNED = {  # case: (overrides, (test AUC, test GAUC, test logloss))
    "din": (["model=din"], (0.7033530263312335, 0.6180835030143331, 0.5593452714626874)),
    "din_official_dice": (
        ["model=din", "model.att_features=official", "act=dice"],
        (0.7109726515121875, 0.6749932983134563, 0.5770109907639027),
    ),
    "dien": (["model=dien"], (0.691361164364803, 0.625821170485202, 0.5646821384124343)),
    "dien_mlp_heads": (
        ["model=dien", "model.att_form=mlp", "model.aux_head=mlp"],
        (0.6901743678026006, 0.6084219880909605, 0.5666042510001006),
    ),
}


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("case", sorted(PINNED))
def test_seeded_run_reproduces_pinned_metrics(case, compose_cfg, tmp_path, one_thread) -> None:
    from ctrbench.engine.job import train

    overrides, expected = PINNED[case]
    record = train(compose_cfg([*TINY, *overrides, "seed=3", "trainer.max_epochs=2"]), tmp_path)
    got = (record["test_auc"], record["test_gauc"], record["test_logloss"])
    assert got == pytest.approx(expected, abs=1e-6)
