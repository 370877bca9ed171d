"""Wide&Deep, PNN and DeepFM: output shape, the FM and IPNN interaction terms, the hashed wide crosses."""

from __future__ import annotations

import itertools

import pytest
import torch

from ctrbench import registry
from ctrbench.activations.prelu import PReLUConfig, PReLUFactory
from ctrbench.datasets.synthetic import SyntheticConfig, SyntheticDataset
from ctrbench.engine.data import ArrayBatches
from ctrbench.models.deepfm import DeepFM, DeepFMConfig, fm_second_order
from ctrbench.models.pnn import InnerProducts
from ctrbench.models.wide_deep import WideDeep, WideDeepConfig, cross_hash
from ctrbench.nn.fields import FieldEmbeddings
from ctrbench.schema import Field, MissingFieldError, Schema

MODELS = ("wide_deep", "pnn", "deepfm")
SMALL = {"emb_dim": 4, "mlp": [8, 4]}
PRELU = PReLUFactory(PReLUConfig())

# item and cat are candidates; hist_item/hist_cat share their tables (two cross pairs).
SCHEMA = Schema(
    fields=(
        Field("user", "categorical", vocab=4),
        Field("item", "categorical", vocab=20),
        Field("cat", "categorical", vocab=6),
        Field("hist_item", "sequence", vocab=20, table="item", length="hist_len"),
        Field("hist_cat", "sequence", vocab=6, table="cat", length="hist_len"),
    )
)


def hand_batch(item: int, hist_item: list[int], length: int, cat: int = 1, hist_cat: int = 2) -> dict:
    """One row; positions at and after ``length`` are padding whatever ids they hold."""
    return {
        "user": torch.tensor([1]),
        "item": torch.tensor([item]),
        "cat": torch.tensor([cat]),
        "hist_item": torch.tensor([hist_item]),
        "hist_cat": torch.tensor([[hist_cat] * len(hist_item)]),
        "hist_len": torch.tensor([length]),
        "label": torch.tensor([1.0]),
    }


def wide_deep(buckets: int = 1 << 12) -> WideDeep:
    torch.manual_seed(0)
    model = WideDeep(
        WideDeepConfig(emb_dim=4, mlp=[8], wide_buckets=buckets), schema=SCHEMA, activation=PRELU
    )
    with torch.no_grad():  # random wide weights, so that every cross shows in the logit
        model.wide.cross.weight.normal_()
        model.wide.cross.weight[0] = 0.0
    return model.eval()


@pytest.fixture(scope="module")
def synthetic():
    config = SyntheticConfig(n_users=30, n_items=60, n_cats=5, max_seq_len=12, max_len=8)
    data = SyntheticDataset(config).load()
    batch = ArrayBatches(data.train, data.schema, data.sequences)[torch.arange(64)]
    return data.schema, batch


@pytest.mark.parametrize("act", ["prelu", "dice"])
@pytest.mark.parametrize("name", MODELS)
def test_one_finite_logit_per_row_and_gradients(synthetic, name: str, act: str) -> None:
    schema, batch = synthetic
    torch.manual_seed(0)
    activation = registry.build("act", act, {})
    model = registry.build("model", name, SMALL, schema=schema, activation=activation)
    logits = model(batch)
    assert logits.shape == (64,) and torch.isfinite(logits).all()
    logits.sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)


def test_field_stack_is_categoricals_then_sum_pooled_behaviours(synthetic) -> None:
    schema, batch = synthetic
    fields = FieldEmbeddings(schema, 3)
    stack = fields(batch)
    assert stack.shape == (64, 7, 3)  # user, user_seg, item, cat, ctx, hist_item, hist_cat (no negatives)
    assert torch.equal(stack[:, 2], fields.bank(batch, "item"))
    assert torch.allclose(stack[:, 5], fields.bank(batch, "hist_item").sum(1))
    assert FieldEmbeddings(schema, 3, behaviours=False)(batch).shape == (64, 5, 3)


def test_fm_second_order_equals_explicit_pairwise_sum() -> None:
    v = torch.tensor([[[1.0, 2.0], [3.0, -1.0], [0.0, 5.0]]])
    # ⟨v1,v2⟩ + ⟨v1,v3⟩ + ⟨v2,v3⟩ = 1 + 10 − 5
    assert fm_second_order(v).tolist() == [6.0]
    v = torch.randn(5, 6, 4, dtype=torch.float64)
    explicit = sum((v[:, i] * v[:, j]).sum(-1) for i, j in itertools.combinations(range(6), 2))
    assert torch.allclose(fm_second_order(v), explicit)


def test_deepfm_logit_is_first_order_plus_fm_on_the_shared_embeddings_plus_deep(synthetic) -> None:
    schema, batch = synthetic
    torch.manual_seed(0)
    model = DeepFM(DeepFMConfig(emb_dim=4, mlp=[8]), schema=schema, activation=PRELU)
    with torch.no_grad():
        for table in model.first_order.bank.tables.values():
            table.weight[1:].normal_()
    deep = model.mlp(model.fields(batch).flatten(1)).squeeze(-1)
    first = model.first_order(batch).sum((1, 2))
    expected = first + fm_second_order(model.fields(batch)) + deep
    assert torch.allclose(model(batch), expected, atol=1e-6)
    assert first.abs().sum() > 0 and fm_second_order(model.fields(batch)).abs().sum() > 0


def test_pnn_inner_products_equal_explicit_pairwise_dots() -> None:
    f = torch.tensor([[[1.0, 0.0], [2.0, 3.0], [-1.0, 4.0]]])
    assert InnerProducts(3)(f).tolist() == [[2.0, -1.0, 10.0]]  # (1,2), (1,3), (2,3)
    f = torch.randn(4, 5, 3)
    explicit = torch.stack([(f[:, i] * f[:, j]).sum(-1) for i, j in itertools.combinations(range(5), 2)], 1)
    assert torch.allclose(InnerProducts(5)(f), explicit, atol=1e-6)


def test_pnn_mlp_sees_embeddings_and_products(synthetic) -> None:
    schema, batch = synthetic
    model = registry.build("model", "pnn", SMALL, schema=schema, activation=PRELU)
    first = model.mlp.net[0]
    assert first.in_features == 7 * 4 + 21  # 7 fields of width 4, 7·6/2 inner products


def test_cross_hash_is_order_sensitive_and_salted_per_pair() -> None:
    h, c = torch.tensor([5, 7, 11]), torch.tensor([3, 2, 13])
    assert (cross_hash(h, c, 0, 1 << 20) != cross_hash(c, h, 0, 1 << 20)).all()
    assert (cross_hash(h, c, 0, 1 << 20) != cross_hash(h, c, 1, 1 << 20)).all()
    ids = cross_hash(torch.arange(1, 1000), torch.tensor(4), 0, 8)
    assert ids.min() >= 1 and ids.max() <= 7 and len(ids.unique()) == 7  # row 0 is reserved for padding


def test_wide_crosses_are_ordered_and_padding_contributes_nothing() -> None:
    model = wide_deep()
    wide = model.wide
    # (h=5, c=3) and (h=3, c=5) are different features
    assert wide.cross_ids(hand_batch(3, [5], 1))[0, 0] != wide.cross_ids(hand_batch(5, [3], 1))[0, 0]
    # ids past hist_len are padding: they map to row 0 and leave the logit unchanged
    ids = wide.cross_ids(hand_batch(3, [5, 7, 9], 2))
    assert ids.shape == (1, 6) and ids[0, [2, 5]].tolist() == [0, 0] and (ids[0, [0, 1, 3, 4]] > 0).all()
    base = wide(hand_batch(3, [5, 7, 0], 2))
    assert torch.equal(wide(hand_batch(3, [5, 7, 9], 2)), base)
    # no history at all: only the first-order weights remain
    assert torch.equal(wide(hand_batch(3, [5, 7], 0)), wide.first_order(hand_batch(3, [5, 7], 0)).sum((1, 2)))


def test_changing_a_history_id_changes_the_wide_logit() -> None:
    model = wide_deep()
    a = model.wide(hand_batch(3, [5, 7], 2))
    assert not torch.equal(model.wide(hand_batch(3, [5, 8], 2)), a)
    assert not torch.equal(model.wide(hand_batch(4, [5, 7], 2)), a)  # and so does the candidate
    batch = hand_batch(3, [5, 8], 2)
    assert torch.allclose(model(batch), model.deep(batch) + model.wide(batch))


def test_wide_cross_weights_learn_from_their_crosses_only() -> None:
    model = wide_deep()
    model.wide.cross.weight.grad = None
    model.wide(hand_batch(3, [5, 7, 9], 2)).sum().backward()
    touched = model.wide.cross.weight.grad.squeeze(-1).nonzero().flatten()
    expected = model.wide.cross_ids(hand_batch(3, [5, 7, 9], 2))[0, [0, 1, 3, 4]]
    assert sorted(touched.tolist()) == sorted(set(expected.tolist()))


def test_wide_deep_needs_behaviours_paired_with_a_candidate() -> None:
    schema = Schema(fields=(Field("user", "categorical", vocab=4), Field("item", "categorical", vocab=9)))
    with pytest.raises(MissingFieldError, match="wide_deep"):
        WideDeep(WideDeepConfig(), schema=schema, activation=PRELU)
    unpaired = Schema(fields=(*schema.fields, Field("hist_tag", "sequence", vocab=5, length="hist_len")))
    with pytest.raises(MissingFieldError, match="sharing a table"):
        WideDeep(WideDeepConfig(), schema=unpaired, activation=PRELU)
