"""Engine pieces: batch gathering, seeded batching, loss composition, determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY
from torch import nn

from ctrbench.engine.data import ArrayBatches, IndexBatches
from ctrbench.engine.task import CTRTask, NonFiniteLossError
from ctrbench.schema import Field, Schema, Sequences, Split

SCHEMA = Schema(
    fields=(
        Field("user", "categorical", vocab=3),
        Field("item", "categorical", vocab=6),
        Field("hist_item", "sequence", vocab=6, table="item", length="hist_len"),
    ),
    max_len=2,
)


def _split() -> tuple[Split, Sequences]:
    seqs = Sequences(offsets=np.array([0, 3, 5]), columns={"hist_item": np.array([1, 2, 3, 4, 5])})
    split = Split(
        columns={
            "user": np.array([1, 1, 2, 2]),
            "item": np.array([4, 5, 1, 2]),
            "label": np.array([1, 0, 1, 0], dtype=np.float32),
        },
        seq=np.array([0, 0, 1, 1]),
        end=np.array([1, 3, 2, 0]),
    )
    return split, seqs


def test_histories_are_gathered_from_sequences_stored_once() -> None:
    split, seqs = _split()
    batch = ArrayBatches(split, SCHEMA, seqs)[torch.tensor([0, 1, 2, 3])]
    # row 0: first behaviour only; row 1: the last max_len=2 of [1, 2, 3]; row 2: [4, 5]; row 3: no history
    assert batch["hist_item"].tolist() == [[1, 0], [2, 3], [4, 5], [0, 0]]
    assert batch["hist_len"].tolist() == [1, 2, 2, 0]
    assert batch["item"].tolist() == [4, 5, 1, 2]
    short = ArrayBatches(split, SCHEMA, seqs)[torch.tensor([0])]
    assert short["hist_item"].shape == (1, 1)  # padded to the longest history in the batch only


def test_index_batches_cover_every_row_once_and_are_seeded() -> None:
    a = [b.tolist() for b in IndexBatches(10, 4, shuffle=True, seed=3)]
    b = [b.tolist() for b in IndexBatches(10, 4, shuffle=True, seed=3)]
    c = [b.tolist() for b in IndexBatches(10, 4, shuffle=True, seed=4)]
    assert a == b and a != c
    assert [len(x) for x in a] == [4, 4, 2] and sorted(sum(a, [])) == list(range(10))
    sampler = IndexBatches(10, 4, shuffle=True, seed=3)
    assert [x.tolist() for x in sampler] != [x.tolist() for x in sampler]  # reshuffled every epoch


class AuxModel(nn.Module):
    def __init__(self, aux: float = 0.3) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([0.5]))
        self.aux = aux

    def forward(self, batch):
        logits = self.w * batch["item"].float()
        return logits, {"aux": self.w.sum() * 0 + self.aux}


class ConstPenalty:
    def penalty(self, model, batch):
        return (model.w**2).sum()


def _batch():
    split, seqs = _split()
    return ArrayBatches(split, SCHEMA, seqs)[torch.arange(4)]


def test_loss_is_bce_plus_weighted_aux_plus_penalty() -> None:
    batch = _batch()
    bce = F.binary_cross_entropy_with_logits(0.5 * batch["item"].float(), batch["label"])
    task = CTRTask(AuxModel(), SCHEMA, regularizer=None, loss_weights={"aux": 2.0})
    assert task.training_step(batch, 0).item() == pytest.approx(bce.item() + 2.0 * 0.3, rel=1e-6)
    task = CTRTask(AuxModel(), SCHEMA, regularizer=ConstPenalty())
    loss = task.training_step(batch, 0)
    assert loss.item() == pytest.approx(bce.item() + 0.3 + 0.25, rel=1e-6)
    loss.backward()
    plain = CTRTask(AuxModel(), SCHEMA)
    plain.training_step(batch, 0).backward()
    # d/dw of the penalty w² adds 2w = 1.0 to the gradient
    assert task.model.w.grad.item() == pytest.approx(plain.model.w.grad.item() + 1.0, rel=1e-6)


def test_non_finite_loss_stops_the_job() -> None:
    task = CTRTask(AuxModel(aux=float("nan")), SCHEMA)
    with pytest.raises(NonFiniteLossError, match="loss became nan"):
        task.training_step(_batch(), 0)


def test_same_seed_gives_identical_test_auc(compose_cfg, tmp_path: Path) -> None:
    from ctrbench.engine.job import train

    cfg = compose_cfg([*TINY, "model=base", "seed=7", "threads=1"])  # bit-exact repeats: a fixed count
    first = train(cfg, tmp_path / "a")
    second = train(cfg, tmp_path / "b")
    assert first["test_auc"] == second["test_auc"] and first["test_gauc"] == second["test_gauc"]
    other = train(compose_cfg([*TINY, "model=base", "seed=8"]), tmp_path / "c")
    assert other["test_auc"] != first["test_auc"]
