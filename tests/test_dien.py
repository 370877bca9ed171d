"""The DIEN family of models (ctrbench.models.dien) on a tiny synthetic dataset."""

from __future__ import annotations

import dataclasses

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
    torch.testing.assert_close(mixed, only_long)  # a mean over valid steps only


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
