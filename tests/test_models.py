"""Every registered model (built-in or installed plugin) against the same contract."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import PAPER_MODELS

from ctrbench import registry
from ctrbench.datasets.synthetic import SyntheticConfig, SyntheticDataset
from ctrbench.engine.data import ArrayBatches
from ctrbench.schema import Schema

DATA = SyntheticDataset(SyntheticConfig(n_users=120, n_items=200, n_cats=10, max_len=12, seed=3)).load()
BATCH = ArrayBatches(DATA.train, DATA.schema, DATA.sequences)[torch.arange(64)]
MODELS = registry.names("model")


def _logits(out):
    return out[0] if isinstance(out, tuple) else out


def build(name: str, act: str = "prelu", schema: Schema = DATA.schema, **options):
    torch.manual_seed(0)
    return registry.build("model", name, options, schema=schema, activation=registry.build("act", act, {}))


def test_every_paper_model_is_registered() -> None:
    assert set(PAPER_MODELS) <= set(MODELS)


@pytest.mark.parametrize("act", ["prelu", "dice"])
@pytest.mark.parametrize("name", MODELS)
def test_model_trains_and_evaluates(name: str, act: str) -> None:
    model = build(name, act)
    out = model(BATCH)
    logits = _logits(out)
    assert logits.shape == (64,) and torch.isfinite(logits).all()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)

    def loss() -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(_logits(model(BATCH)), BATCH["label"])

    model.eval()
    with torch.no_grad():
        before = loss()
        assert torch.equal(_logits(model(BATCH)), _logits(model(BATCH)))  # eval is deterministic
    model.train()
    for _ in range(3):
        opt.zero_grad()
        loss().backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        assert loss() < before


@pytest.mark.parametrize("name", ["din", "gru_attention", "aigru", "agru", "augru", "dien"])
def test_behaviour_models_refuse_a_schema_without_behaviours(name: str) -> None:
    flat = Schema(fields=tuple(f for f in DATA.schema.fields if f.kind == "categorical"), source="flatdata")
    with pytest.raises(ValueError, match=rf"model '{name}' needs .*behaviour.*dataset 'flatdata'"):
        build(name, schema=flat)


def test_din_attention_options_change_the_model() -> None:
    base = build("din")(BATCH)
    assert not torch.allclose(build("din", att_softmax=True)(BATCH), base)
    official = build("din", att_features="official")
    assert official.attention.score.inter.dim() == 2  # [q, k, q-k, q*k] has no outer product
