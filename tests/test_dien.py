"""The DIEN family of models (ctrbench.models.dien) on a tiny synthetic dataset."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from ctrbench.datasets.synthetic import SyntheticConfig, SyntheticDataset
from ctrbench.engine.data import ArrayBatches
from ctrbench.models import dien
from ctrbench.nn import PReLU
from ctrbench.schema import MissingFieldError, Schema

MODELS = {
    "gru_attention": dien.GRUAttention,
    "aigru": dien.AIGRUModel,
    "agru": dien.AGRUModel,
    "augru": dien.AUGRUModel,
    "dien": dien.DIEN,
}


def _prelu(width: int, ndim: int = 2) -> torch.nn.Module:
    return PReLU(width)


@pytest.fixture(scope="module")
def data():
    ds = SyntheticDataset(SyntheticConfig(n_users=40, n_items=60, n_cats=6, max_seq_len=12, max_len=8)).load()
    return ds.schema, ArrayBatches(ds.train, ds.schema, ds.sequences)


def _build(name: str, schema: Schema, **options):
    cls = MODELS[name]
    torch.manual_seed(0)
    return cls(cls.Config(**options), schema=schema, activation=_prelu)


def _logits(out):
    return out[0] if isinstance(out, tuple) else out


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("gru_attention", {}),
        ("gru_attention", {"att_form": "mlp"}),
        ("aigru", {}),
        ("agru", {"att_form": "mlp", "att_features": "outer"}),
        ("augru", {}),
        ("augru", {"gate": "official", "loop": "script"}),
        ("dien", {}),
        ("dien", {"aux_head": "mlp", "gate": "official", "att_form": "mlp"}),
        ("dien", {"hidden": 10}),  # inner head with a projection
    ],
)
def test_models_return_one_logit_per_row(data, name: str, options: dict) -> None:
    schema, batches = data
    batch = batches[torch.arange(32)]
    model = _build(name, schema, **options)
    out = model(batch)
    logits = _logits(out)
    assert logits.shape == (32,) and torch.isfinite(logits).all()
    assert isinstance(out, tuple) == (name == "dien")
    F.binary_cross_entropy_with_logits(logits, batch["label"]).backward()
    model.eval()
    assert _logits(model(batch)).shape == (32,)
    assert not isinstance(model(batch), tuple)  # no auxiliary loss outside training


def test_augru_is_sensitive_to_behaviour_order(data) -> None:
    schema, batches = data
    batch = batches[torch.arange(64)]
    model = _build("augru", schema).eval()
    base = model(batch)
    lengths = batch["hist_len"]
    flipped = dict(batch)
    for key in ("hist_item", "hist_cat"):
        seq = batch[key].clone()
        for i, n in enumerate(lengths.tolist()):
            seq[i, :n] = seq[i, :n].flip(0)
        flipped[key] = seq
    assert not torch.allclose(model(flipped)[lengths > 2], base[lengths > 2])


def test_aux_loss_changes_the_embedding_gradients(data) -> None:
    schema, batches = data
    batch = batches[torch.arange(64)]
    grads, aux = {}, {}
    for alpha in (0.0, 0.5):
        model = _build("dien", schema, aux_alpha=alpha)
        assert model.loss_weights == {"aux": alpha}
        out = model(batch)
        logits, terms = out if isinstance(out, tuple) else (out, {})
        loss = F.binary_cross_entropy_with_logits(logits, batch["label"])
        for name, value in terms.items():
            loss = loss + model.loss_weights[name] * value
        loss.backward()
        grads[alpha] = model.embeddings.tables["item"].weight.grad.clone()
        aux[alpha] = terms.get("aux")
    assert aux[0.0] is None  # skipped when α = 0
    assert aux[0.5] > 0
    assert not torch.allclose(grads[0.0], grads[0.5])


def test_rows_shorter_than_two_add_no_aux_term(data) -> None:
    schema, batches = data
    all_rows = batches[torch.arange(len(batches))]
    lengths = all_rows["hist_len"]
    short = torch.nonzero(lengths < 2).squeeze(1)[:8]
    long = torch.nonzero(lengths >= 2).squeeze(1)[:8]
    assert len(short) and len(long)
    model = _build("dien", schema)
    only_short = model(batches[short])[1]["aux"]
    assert only_short == 0 and torch.isfinite(only_short)
    mixed = model(batches[torch.cat([short, long])])[1]["aux"]
    only_long = model(batches[long])[1]["aux"]
    # eq. 7: the sum over the valid steps, divided by the number of samples (16, then 8)
    torch.testing.assert_close(mixed * 16, only_long * 8)
    model.aux.norm = "step_mean"
    mixed = model(batches[torch.cat([short, long])])[1]["aux"]
    torch.testing.assert_close(mixed, model(batches[long])[1]["aux"])  # a mean over valid steps only


def _aux_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Three rows of lengths 4, 1, 2, padded to width 6 (T_max = 4), with width-1 states and
    behaviours; padding holds garbage."""
    g = 50.0  # never read: padding, or a state/behaviour without a next step
    states = torch.tensor([[0.5, -1.0, 2.0, g, g, g], [g] * 6, [1.5, g, g, g, g, g]]).unsqueeze(-1)
    positives = torch.tensor([[g, 1.0, 0.5, -2.0, g, g], [g] * 6, [g, 2.0, g, g, g, g]]).unsqueeze(-1)
    negatives = torch.tensor([[g, 0.3, -1.0, 0.5, g, g], [g] * 6, [g, -0.5, g, g, g, g]]).unsqueeze(-1)
    mask = torch.arange(6)[None, :] < torch.tensor([4, 1, 2])[:, None]
    return states, positives, negatives, mask


def _term(pos: float, neg: float) -> float:
    """−log σ(pos) − log(1 − σ(neg))."""
    return -math.log(1 / (1 + math.exp(-pos))) - math.log(1 - 1 / (1 + math.exp(-neg)))


def test_aux_norms_on_hand_computed_terms() -> None:
    # valid steps (row, t): (0, 0), (0, 1), (0, 2), (2, 0); the inner head scores s = h_t·e_{t+1}
    total = _term(0.5, 0.15) + _term(-0.5, 1.0) + _term(-4.0, 1.0) + _term(3.0, -0.75)
    expected = {
        "paper": total / 3,  # eq. 7: Σ_i Σ_t over N = 3 samples
        # tf.reduce_mean over B × (T_max − 1) = 3 × 3 entries (T_max: the longest history, not the width)
        "official": total / (3 * (4 - 1)),
        "step_mean": total / 4,  # the 4 valid steps
    }
    for norm, value in expected.items():
        aux = dien.AuxiliaryLoss(1, 1, head="inner", norm=norm)
        assert aux(*_aux_inputs()).item() == pytest.approx(value, rel=1e-6), norm
    for norm in expected:  # the mlp head's terms are normalised alike
        torch.manual_seed(0)
        aux = dien.AuxiliaryLoss(1, 1, head="mlp", mlp=[4, 3], norm=norm)
        got = aux(*_aux_inputs()).item()
        torch.manual_seed(0)
        steps = dien.AuxiliaryLoss(1, 1, head="mlp", mlp=[4, 3], norm="step_mean")(*_aux_inputs()).item()
        assert got == pytest.approx(steps * 4 * expected[norm] / total, rel=1e-6), norm
    empty = torch.zeros(3, 6, dtype=torch.bool)
    states, pos, neg, _ = _aux_inputs()
    assert dien.AuxiliaryLoss(1, 1, norm="official")(states, pos, neg, empty).item() == 0.0


def test_aux_norm_is_a_typed_option_with_the_paper_as_default(compose_cfg) -> None:
    assert compose_cfg(["model=dien"]).model.aux_norm == "paper"
    assert compose_cfg(["model=dien", "model.aux_norm=official"]).model.aux_norm == "official"
    with pytest.raises(
        ValueError, match=r"model.aux_norm='batch' is unknown \(choices: paper, official, step_mean\)"
    ):
        dien.AuxiliaryLoss(1, 1, norm="batch")


def test_aux_mlp_head_input_norm_is_applied_to_h_and_e() -> None:
    states, pos, neg, mask = _aux_inputs()
    torch.manual_seed(0)
    plain = dien.AuxiliaryLoss(1, 1, head="mlp", mlp=[4, 3], norm="step_mean")
    torch.manual_seed(0)
    frozen = dien.AuxiliaryLoss(1, 1, head="mlp", mlp=[4, 3], norm="step_mean", input_bn="frozen")
    with torch.no_grad():  # the frozen norm's affine map, folded into the inputs by hand
        frozen.norm_h.weight.fill_(2.0)
        frozen.norm_e.bias.fill_(0.5)
    c = 1 / math.sqrt(1 + 1e-3)
    want = plain(states * 2.0 * c, pos * c + 0.5, neg * c + 0.5, mask)
    torch.testing.assert_close(frozen(states, pos, neg, mask), want)


def test_dien_without_negatives_fails_in_one_line(data) -> None:
    schema, _ = data
    plain = dataclasses.replace(
        schema, fields=tuple(f for f in schema.fields if f.negative_of is None), source="plain"
    )
    with pytest.raises(MissingFieldError, match="neg_hist_item") as err:
        _build("dien", plain)
    assert "\n" not in str(err.value) and "'dien'" in str(err.value)
    _build("dien", plain, aux_alpha=0.0)  # no auxiliary loss, no negatives needed
    no_history = dataclasses.replace(plain, fields=tuple(f for f in plain.fields if f.kind != "sequence"))
    for name in MODELS:
        with pytest.raises(MissingFieldError, match="behaviour sequence"):
            _build(name, no_history)
