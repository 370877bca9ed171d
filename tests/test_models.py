"""Every registered model (built-in or installed plugin) against the same contract."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import PAPER_MODELS, TINY

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


def _mlp_input(model: torch.nn.Module, mlp: torch.nn.Module) -> torch.Tensor:
    """The input the MLP ``mlp`` of ``model`` receives on BATCH (eval mode)."""
    seen: list[torch.Tensor] = []
    handle = mlp.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    model.eval()
    with torch.no_grad():
        model(BATCH)
    handle.remove()
    return seen[0]


def test_din_item_bias_shifts_the_logit_by_the_items_row() -> None:
    model = build("din", item_bias=True).eval()
    with torch.no_grad():
        before = model(BATCH)
        model.item_bias.weight.normal_()
        after = model(BATCH)
    assert model.item_field.name == "item"
    torch.testing.assert_close(after - before, model.item_bias.weight[BATCH["item"], 0].detach())


def test_frozen_batch_norm_is_tensorflows_inference_mode() -> None:
    from ctrbench.nn.mlp import FrozenBatchNorm, input_norm

    norm = FrozenBatchNorm(3)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([1.0, 2.0, -1.0]))
        norm.bias.copy_(torch.tensor([0.0, 0.5, 1.0]))
    x = torch.randn(5, 3)
    want = (x - 0.0) / math.sqrt(1.0 + 1e-3) * norm.weight + norm.bias  # moving mean 0, variance 1
    torch.testing.assert_close(norm(x), want)
    norm.train()
    torch.testing.assert_close(norm(x), want)  # the same in training: never batch statistics
    assert isinstance(input_norm("batch", 3), torch.nn.BatchNorm1d)
    with pytest.raises(
        ValueError, match=r"model.input_bn='layer' is unknown \(choices: none, batch, frozen\)"
    ):
        input_norm("layer", 3)


def test_din_official_mlp_input_options() -> None:
    model = build("din", mlp_product=True, profile=False, interest_fc=True, input_bn="frozen")
    b = model.embeddings.behaviours(BATCH)
    with torch.no_grad():
        pooled = model.interest_fc(model.attention(b.query, b.keys, b.mask)[0])
        x = torch.cat([b.query, pooled, pooled * b.query], 1)  # no profile fields; v_U' ⊙ v_A
        norm = model.input_bn
        torch.testing.assert_close(
            _mlp_input(model, model.mlp), norm.weight * x / math.sqrt(1.001) + norm.bias
        )
    paper = build("din")
    assert paper.mlp.net[0].in_features == 3 * 18 + 2 * 36  # user, user_seg, ctx; v_A; v_U
    assert isinstance(paper.input_bn, torch.nn.Identity) and paper.interest_fc is None


def test_din_sigmoid_options_replace_the_act_group_where_asked() -> None:
    model = build("din", att_act="sigmoid")
    unit = model.attention.score
    assert isinstance(unit.act, torch.nn.Sigmoid) and isinstance(unit.rest.net[1], torch.nn.Sigmoid)
    assert not isinstance(model.mlp.net[1], torch.nn.Sigmoid)
    model = build("din", mlp_act="sigmoid")
    assert isinstance(model.mlp.net[1], torch.nn.Sigmoid) and not isinstance(
        model.attention.score.act, torch.nn.Sigmoid
    )
    with pytest.raises(ValueError, match=r"model.att_act='tanh' is unknown \(choices: act, sigmoid\)"):
        build("din", att_act="tanh")


def test_dien_tower_product_and_input_norm() -> None:
    model = build("dien", tower_product=True, input_bn="frozen")
    b = model.embeddings.behaviours(BATCH)
    with torch.no_grad():
        final = model.interest(b)[1]
        pooled = b.keys.sum(1)
        x = torch.cat([*b.others, b.query, pooled, b.query * pooled, final], 1)
        norm = model.tower.input_bn
        want = norm.weight * x / math.sqrt(1.001) + norm.bias
    torch.testing.assert_close(_mlp_input(model, model.tower.mlp), want)


@pytest.mark.parametrize(("variant", "plugin"), [("din_official", "din"), ("dien_official", "dien")])
def test_official_variants_switch_every_option_and_train(
    variant: str, plugin: str, compose_cfg, tmp_path
) -> None:
    from ctrbench.engine.job import train

    cfg = compose_cfg([*TINY, f"model={variant}", "+trainer.limit_train_batches=2", "checkpoint=false"])
    assert cfg.model.name == plugin
    defaults = registry.config_class(registry.load("model", plugin))()
    changed = {k for k in cfg.model if k != "name" and cfg.model[k] != getattr(defaults, k)}
    expected = {
        "din_official": {
            "emb_dim",
            "mlp",
            "att_softmax",
            "att_features",
            "att_scale",
            "att_act",
            "mlp_act",
            "input_bn",
            "interest_fc",
            "mlp_product",
            "profile",
            "item_bias",
        },
        "dien_official": {
            "att_form",
            "att_act",
            "att_query",
            "gate",
            "tower_product",
            "input_bn",
            "aux_head",
            "aux_input_bn",
            "aux_norm",
            "aux_alpha",
        },
    }
    assert changed == expected[variant]
    record = train(cfg, tmp_path)
    assert math.isfinite(record["test_auc"]) and math.isfinite(record["test_logloss"])
