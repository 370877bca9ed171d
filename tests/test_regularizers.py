"""Regularizers of DIN §5.1/§6.5: MBA (eq. 6–7), DiFacto-style, ℓ2, feature-id dropout, frequency
filter — checked against hand computations and through the engine hooks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from conftest import TINY, run_cli
from torch import nn

from ctrbench import registry
from ctrbench.engine.data import ArrayBatches
from ctrbench.engine.optim import OptimConfig, SplitOptimizer, build_optimizer, make_sparse
from ctrbench.engine.task import CTRTask
from ctrbench.nn.embedding import EmbeddingBank
from ctrbench.regularizers.counts import id_counts
from ctrbench.regularizers.tables import TableSelectionError
from ctrbench.results import read_results
from ctrbench.schema import DatasetSplits, Field, Schema, Sequences, Split

SCHEMA = Schema(
    fields=(
        Field("user", "categorical", vocab=3),
        Field("item", "categorical", vocab=8),
        Field("cat", "categorical", vocab=4),
        Field("hist_item", "sequence", vocab=8, table="item", length="hist_len"),
        Field("hist_cat", "sequence", vocab=4, table="cat", length="hist_len"),
        Field("neg_hist_item", "sequence", vocab=8, table="item", length="hist_len", negative_of="hist_item"),
    ),
    max_len=3,
    source="handmade",
)
ITEM_CAT = np.array([0, 1, 1, 2, 2, 3, 3, 1])  # category of items 0..7


def _data() -> DatasetSplits:
    """User 1 behaviours [1, 2, 3, 2], user 2 behaviours [4, 5]."""
    hist = np.array([1, 2, 3, 2, 4, 5])
    seqs = Sequences(
        offsets=np.array([0, 4, 6]),
        columns={
            "hist_item": hist,
            "hist_cat": ITEM_CAT[hist],
            "neg_hist_item": np.array([7, 7, 7, 7, 6, 6]),
        },
    )

    def split(user, item, seq, end, label):
        item = np.array(item)
        return Split(
            columns={
                "user": np.array(user),
                "item": item,
                "cat": ITEM_CAT[item],
                "label": np.array(label, dtype=np.float32),
            },
            seq=np.array(seq),
            end=np.array(end),
        )

    # train rows (user, item, history): (1, 2, [1]), (1, 3, [1, 2]), (1, 2, [1, 2, 3]),
    # (1, 6, [2, 3, 2]), (2, 5, [4])
    train = split([1, 1, 1, 1, 2], [2, 3, 2, 6, 5], [0, 0, 0, 0, 1], [1, 2, 3, 4, 1], [1, 1, 0, 0, 1])
    test = split([1, 2], [7, 4], [0, 1], [4, 2], [1, 0])
    return DatasetSplits(SCHEMA, train, test, test, sequences=seqs)


def _batch(data: DatasetSplits, split: str = "train") -> dict[str, torch.Tensor]:
    ds = ArrayBatches(getattr(data, split), data.schema, data.sequences)
    return ds[torch.arange(len(ds))]


class TinyModel(nn.Module):
    """An embedding bank and a linear head over the candidate and the summed history."""

    def __init__(self, schema: Schema, dim: int = 3) -> None:
        super().__init__()
        self.bank = EmbeddingBank(schema, dim, init_std=0.5)
        self.out = nn.Linear(2 * dim, 1)

    def forward(self, batch):
        x = torch.cat([self.bank(batch, "item"), self.bank(batch, "hist_item").sum(1)], dim=1)
        return self.out(x).squeeze(-1)


def _reg(name: str, data: DatasetSplits | None = None, **options):
    reg = registry.build("reg", name, options)
    reg.fit(data or _data())
    return reg


# ---- counts ---------------------------------------------------------------------------------
def test_id_counts_are_occurrences_in_training_samples() -> None:
    counts = id_counts(_data(), ["item", "cat"])
    # candidates 2, 3, 2, 6, 5; histories [1], [1, 2], [1, 2, 3], [2, 3, 2], [4]; negatives not counted
    assert counts["item"].tolist() == [0, 3, 2 + 4, 1 + 2, 1, 1, 1, 0]
    # categories: candidates 1, 2, 1, 3, 3; history categories of [1], [1,2], [1,2,3], [2,3,2], [4]
    assert counts["cat"].tolist() == [0, 2 + 7, 1 + 3, 2]


def test_id_counts_match_brute_force_on_synthetic_data() -> None:
    options = {"n_users": 60, "n_items": 90, "n_cats": 7, "max_len": 8}
    data = registry.build("dataset", "synthetic", options).load()
    counts = id_counts(data, ["item"])
    batch = _batch(data)
    expected = np.bincount(batch["item"].numpy(), minlength=91) + np.bincount(
        batch["hist_item"].reshape(-1).numpy(), minlength=91
    )
    expected[0] = 0
    assert counts["item"].tolist() == expected.tolist()


# ---- MBA (DIN eq. 6-7) --------------------------------------------------------------------------
def test_mba_penalty_value_and_gradient_follow_eq_7() -> None:
    data, lam = _data(), 0.3
    reg = _reg("mba", data, lam=lam, tables=["item"])
    model = TinyModel(SCHEMA)
    batch = _batch(data)
    rows = torch.tensor([0, 1])  # train rows 0 and 1: items 2, 3 and histories [1], [1, 2]
    small = {k: v[rows] for k, v in batch.items()}
    penalty = reg.penalty(model, small)
    weight = model.bank.tables["item"].weight
    w = weight.detach()
    n = {1: 3, 2: 6, 3: 3}
    # R_m = ½λ·Σ_j (α_mj / n_j)·‖w_j‖² over the ids of the batch, so that ...
    expected = 0.5 * lam * sum(float(w[j].pow(2).sum()) / n[j] for j in (1, 2, 3))
    assert penalty.item() == pytest.approx(expected, rel=1e-6)
    penalty.backward()
    for j in range(8):
        # ... the gradient is eq. 7's update term λ·(α_mj / n_j)·w_j on the batch's rows, 0 elsewhere
        want = lam * w[j] / n[j] if j in n else torch.zeros(3)
        torch.testing.assert_close(weight.grad[j], want, rtol=1e-6, atol=0)
        if j not in n:
            assert torch.count_nonzero(weight.grad[j]) == 0  # exactly zero off the batch


def test_mba_gradient_is_sparse_and_rows_only_for_sparse_tables() -> None:
    data = _data()
    reg = _reg("mba", data, lam=1.0)
    model = TinyModel(SCHEMA)
    make_sparse(model, OptimConfig(sparse=True))
    reg.penalty(model, _batch(data)).backward()
    grad = model.bank.tables["item"].weight.grad
    assert grad.is_sparse
    assert sorted(set(grad.coalesce().indices()[0].tolist())) == [1, 2, 3, 4, 5, 6]  # not 7 (test only)


def test_mba_defaults_to_behaviour_tables_and_rejects_unknown_tables() -> None:
    assert _reg("mba").tables == ["item", "cat"]
    with pytest.raises(TableSelectionError, match=r"unknown table\(s\) 'goods'.*user, item, cat"):
        _reg("mba", tables=["goods"])


def test_penalty_names_the_problem_when_the_model_has_no_bank() -> None:
    with pytest.raises(TableSelectionError, match="holds none of the tables item, cat"):
        _reg("mba").penalty(nn.Linear(1, 1), _batch(_data()))


# ---- DiFacto ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_difacto_row_weights_follow_the_documented_formula(beta: float) -> None:
    data, lam = _data(), 0.2
    reg = _reg("difacto", data, lam=lam, beta=beta, tables=["item"])
    batch = _batch(data)
    ids, weights = reg.row_weights("item", batch)
    n = id_counts(data, ["item"])["item"]
    flat = torch.cat([batch["item"], batch["hist_item"].reshape(-1)])
    occurrences = torch.bincount(flat, minlength=8)
    assert ids.tolist() == [1, 2, 3, 4, 5, 6]
    want = [occurrences[j].item() / n[j] ** beta for j in ids.tolist()]  # c_mj / n_j^β
    assert weights.tolist() == pytest.approx(want, rel=1e-6)
    model = TinyModel(SCHEMA)
    w = model.bank.tables["item"].weight.detach()
    expected = lam * sum(c * float(w[j].pow(2).sum()) for j, c in zip(ids.tolist(), want, strict=True))
    assert reg.penalty(model, batch).item() == pytest.approx(expected, rel=1e-5)


def test_difacto_rejects_negative_beta() -> None:
    with pytest.raises(ValueError, match=r"reg.beta=-1.0 is invalid"):
        registry.build("reg", "difacto", {"beta": -1.0})


# ---- plain L2 -------------------------------------------------------------------------------------
@pytest.mark.parametrize("sparse", [False, True])
def test_l2_penalizes_whole_tables(sparse: bool) -> None:
    data, lam = _data(), 0.1
    reg = _reg("l2", data, lam=lam)
    model = TinyModel(SCHEMA)
    make_sparse(model, OptimConfig(sparse=sparse))
    penalty = reg.penalty(model, _batch(data))
    weights = [model.bank.tables[t].weight for t in ("item", "cat")]
    expected = lam * sum(float(w.detach()[1:].pow(2).sum()) for w in weights)
    assert penalty.item() == pytest.approx(expected, rel=1e-6)
    penalty.backward()
    grad = weights[0].grad.to_dense() if sparse else weights[0].grad
    torch.testing.assert_close(grad[1:], 2 * lam * weights[0][1:].detach())  # every row, in the batch or not


# ---- dropout ----------------------------------------------------------------------------------------
def test_dropout_rate_alignment_and_lengths() -> None:
    n, width = 4000, 20
    schema = dataclasses.replace(SCHEMA, max_len=width)
    lengths = torch.randint(0, width + 1, (n,))
    steps = torch.arange(width)
    valid = steps[None, :] < lengths[:, None]
    items = torch.where(valid, torch.randint(1, 8, (n, width)), 0)
    batch = {
        "hist_item": items,
        "hist_cat": torch.as_tensor(ITEM_CAT)[items] * valid,
        "neg_hist_item": torch.where(valid, 8 - items, 0),
        "hist_len": lengths,
        "item": torch.ones(n, dtype=torch.long),
    }
    reg = registry.build("reg", "dropout", {"rate": 0.3})
    reg.fit(DatasetSplits(schema, *(_data().train,) * 3, sequences=_data().sequences))
    torch.manual_seed(0)
    out = reg.transform(batch)
    kept = out["hist_len"]
    assert 1 - kept.sum().item() / lengths.sum().item() == pytest.approx(0.3, abs=0.01)
    assert torch.equal(out["item"], batch["item"])
    new_valid = steps[None, :] < kept[:, None]
    assert bool((out["hist_item"][~new_valid] == 0).all()) and bool((out["hist_item"][new_valid] != 0).all())
    # behaviours keep their fields together (cat of item, aligned negative) ...
    assert torch.equal(out["hist_cat"], torch.as_tensor(ITEM_CAT)[out["hist_item"]] * new_valid)
    assert torch.equal(out["neg_hist_item"], torch.where(new_valid, 8 - out["hist_item"], 0))
    # ... and the kept ones are a time-ordered subsequence of the original history
    for b in range(50):
        orig, new = batch["hist_item"][b, : lengths[b]].tolist(), out["hist_item"][b, : kept[b]].tolist()
        it = iter(orig)
        assert all(x in it for x in new)


def test_dropout_touches_training_batches_only() -> None:
    data = _data()
    reg = _reg("dropout", data, rate=0.99)
    seen: list[dict[str, torch.Tensor]] = []

    class Spy(TinyModel):
        def forward(self, batch):
            seen.append(batch)
            return super().forward(batch)

    task = CTRTask(Spy(SCHEMA), SCHEMA, reg)
    batch = _batch(data)
    task(batch)  # evaluation path
    assert torch.equal(seen[-1]["hist_item"], batch["hist_item"])
    torch.manual_seed(1)
    task.training_step(batch, 0)
    assert seen[-1]["hist_len"].sum() < batch["hist_len"].sum()


# ---- frequency filter --------------------------------------------------------------------------------
def test_filter_maps_all_but_top_k_to_one_oov_row_in_training_and_evaluation() -> None:
    data = _data()
    reg = _reg("filter", data, top_k=2, min_count=1, tables=["item"])
    # item counts [0, 3, 6, 3, 1, 1, 1, 0]: top 2 = id 2 (6) and id 1 (3, ties broken by smaller id)
    assert reg.kept("item") == 2
    schema = reg.adapt_schema(SCHEMA)
    assert schema["item"].vocab == schema["hist_item"].vocab == 9 and schema["cat"].vocab == 4
    model = TinyModel(schema)
    seen: list[dict[str, torch.Tensor]] = []
    model.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    task = CTRTask(model, schema, reg)
    for call in (lambda b: task(b), lambda b: task.training_step(b, 0)):
        batch = _batch(data, "test")  # items 7 and 4, histories [2, 3, 2] and [4, 5]
        call(batch)
        enc = seen[-1]
        assert enc["item"].tolist() == [8, 8]
        assert enc["hist_item"].tolist() == [[2, 8, 2], [8, 8, 0]]  # padding stays 0
        assert enc["neg_hist_item"].tolist() == [[8, 8, 8], [8, 8, 0]]
        assert torch.equal(enc["hist_cat"], batch["hist_cat"])  # table not selected


def test_filter_min_count() -> None:
    reg = _reg("filter", min_count=3)
    # item counts [0, 3, 6, 3, 1, 1, 1, 0], category counts [0, 9, 4, 2]
    assert reg.kept("item") == 3 and reg.kept("cat") == 2


# ---- sparse tables and the split optimizer -------------------------------------------------------------
def test_sparse_tables_update_only_rows_in_the_batch() -> None:
    data = _data()
    model = TinyModel(SCHEMA)
    config = OptimConfig(name="adam", lr=0.1, sparse=True)
    assert len(make_sparse(model, config)) == 3  # item, cat, user tables of the bank
    opt = build_optimizer(model, config)
    assert isinstance(opt, SplitOptimizer)
    before = model.bank.tables["item"].weight.detach().clone()
    batch = {k: v[:1] for k, v in _batch(data).items()}  # item 2, history [1]
    task = CTRTask(model, SCHEMA, _reg("mba", data))
    loss = task.training_step(batch, 0)
    opt.zero_grad()
    loss.backward()
    opt.step()
    changed = (model.bank.tables["item"].weight != before).any(dim=1).nonzero().flatten().tolist()
    assert changed == [1, 2]
    state = opt.state_dict()
    fresh = build_optimizer(model, config)
    fresh.load_state_dict(state)
    assert len(fresh.state) == len(opt.state) > 0


def test_auto_sparse_uses_a_row_threshold() -> None:
    model = TinyModel(SCHEMA)
    assert make_sparse(model, OptimConfig(sparse="auto", sparse_min_rows=5)) == [model.bank.tables["item"]]
    with pytest.raises(ValueError, match="optim.sparse='yes' is invalid"):
        OptimConfig(sparse="yes")


# ---- every regularizer through the CLI -----------------------------------------------------------------
REGS = ["none", "l2", "dropout", "filter", "difacto", "mba"]


def test_regularizer_sweep_on_high_cardinality_data(tmp_path) -> None:
    sweep = tmp_path / "sweep"
    result = run_cli(
        [
            "-m",
            *TINY,
            f"reg={','.join(REGS)}",
            "model=base",
            "dataset.n_items=120000",
            "dataset.item_alpha=0.6",
            "optim.sparse=auto",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    records = read_results(sweep)
    assert sorted(r["reg"] for r in records) == sorted(REGS)
    assert all(r["status"] == "ok" for r in records), [r["error"] for r in records]
    assert all(r["sparse_tables"] == 1 for r in records)  # the 120k-row item table (also with the OOV row)
    summary = (sweep / "summary.csv").read_text().splitlines()
    assert len(summary) == 1 + len(REGS)
