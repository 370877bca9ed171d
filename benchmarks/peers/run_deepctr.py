"""DeepCTR-Torch peer: its ``DIN`` / ``DIEN`` trained with its own ``compile`` + ``fit``.

    bash benchmarks/peers/setup_deepctr.sh            # once: benchmarks/peers/.venv-deepctr
    OMP_NUM_THREADS=1 benchmarks/peers/.venv-deepctr/bin/python benchmarks/peers/run_deepctr.py \\
        --data benchmarks/peers/data --model din --out benchmarks/peers/out/deepctr_din.json --threads 1

(options as in ``peer_io``: ``--epochs``, ``--batch-size``, ``--max-batches``, ``--activation
prelu|dice``, ``--seed``). The model is built the way DeepCTR-Torch's DIN/DIEN examples build it:

* ``SparseFeat`` ``item`` (vocabulary ``n_items``) and ``cat`` (``n_cats``), 16 wide each;
* ``VarLenSparseFeat`` ``hist_item`` / ``hist_cat`` (maxlen 50, ``length_name="hist_len"``) sharing
  the ``item`` / ``cat`` embeddings through ``embedding_name``; for DIEN also ``neg_hist_item`` /
  ``neg_hist_cat`` (same embeddings, same length), the names DeepCTR's DIEN looks up for its
  auxiliary loss (``use_negsampling=True``, ``gru_type="AUGRU"``, ``alpha`` 1.0);
* attention MLP (80, 40), top MLP (200, 80), ``--activation`` for both (``dnn_activation`` and
  ``att_activation``), attention weights not normalized (DIN paper), no L2 on the embeddings
  (DeepCTR's default is 1e-6; the comparison trains every tool without regularization), no
  dropout or batch norm, DeepCTR's own initialisation (``init_std`` 1e-4);
* ``torch.optim.Adam`` (lr 1e-3) and ``"binary_crossentropy"`` given to ``model.compile`` (DeepCTR
  sums the loss over the batch, and for DIEN adds its mean auxiliary loss, as it does for users);
  no training metrics, so ``fit`` computes no per-batch AUC.

What is timed: the ``model.fit(x, y, batch_size=..., epochs=..., verbose=2, shuffle=True)`` call,
whole: besides the batches it includes fit's own set-up (concatenating the input columns into one
tensor, building the DataLoader; well under a second), as a user pays for training with
DeepCTR-Torch. Loading the arrays, model construction, ``predict`` and file writing are not timed.
``fit`` has no per-batch stop, so with ``--max-batches N`` each epoch is its own ``fit(epochs=1)``
call on N·batch-size rows drawn at random (seeded) from the training rows, which ``fit`` then
shuffles and batches itself. Predictions: ``model.predict`` on every test row, in order.
"""

from __future__ import annotations

import sys

import numpy as np
import peer_io

TOOL = "deepctr-torch"
SEQ = ("hist_item", "hist_cat")
NEG_SEQ = ("neg_hist_item", "neg_hist_cat")


def build(args, meta: dict):
    """DeepCTR-Torch's DIN or DIEN for the prepared arrays, compiled; and its input names."""
    import torch
    from deepctr_torch.inputs import SparseFeat, VarLenSparseFeat, get_feature_names
    from deepctr_torch.models import DIEN, DIN

    maxlen = int(meta["max_len"])
    vocab = {"item": int(meta["n_items"]), "cat": int(meta["n_cats"])}
    columns = [SparseFeat(name, vocab[name], embedding_dim=peer_io.EMB_DIM) for name in ("item", "cat")]
    sequences = SEQ + (NEG_SEQ if args.model == "dien" else ())
    for name in sequences:
        base = name.rsplit("_", 1)[1]  # hist_item, neg_hist_item -> item
        feat = SparseFeat(name, vocab[base], embedding_dim=peer_io.EMB_DIM, embedding_name=base)
        columns.append(VarLenSparseFeat(feat, maxlen=maxlen, length_name="hist_len"))

    common = dict(
        dnn_hidden_units=peer_io.MLP_HIDDEN,
        dnn_activation=args.activation,
        att_activation=args.activation,
        att_weight_normalization=False,
        l2_reg_embedding=0.0,
        seed=args.seed,
        task="binary",
        device="cpu",
    )
    if args.model == "din":
        model = DIN(columns, ["item", "cat"], att_hidden_size=peer_io.ATT_HIDDEN, **common)
    else:
        model = DIEN(
            columns,
            ["item", "cat"],
            gru_type="AUGRU",
            use_negsampling=True,
            att_hidden_units=peer_io.ATT_HIDDEN,
            **common,
        )
    model.compile(torch.optim.Adam(model.parameters(), lr=peer_io.LR), "binary_crossentropy")
    return model, get_feature_names(columns)


def flops_per_sample(model, train: dict[str, np.ndarray], size: int) -> float:
    """One training step as DeepCTR-Torch's ``fit`` does it (feature columns concatenated in
    ``feature_index`` order, summed BCE + regularization + auxiliary loss), on a copy."""
    import copy

    import torch

    twin = copy.deepcopy(model)
    cols = [train[name][:size].reshape(size, -1) for name in twin.feature_index]
    x = torch.from_numpy(np.concatenate(cols, axis=-1)).float()
    y = torch.from_numpy(train["label"][:size]).float()

    def step() -> None:
        pred = twin(x).squeeze()
        loss = twin.loss_func(pred, y, reduction="sum") + twin.get_regularization_loss() + twin.aux_loss
        loss.backward()

    return peer_io.step_flops(step, size)


def main(args, clock: peer_io.Clock) -> np.ndarray:
    import deepctr_torch
    import torch

    torch.set_num_threads(args.threads)
    args.tool_version = deepctr_torch.__version__  # lands in OUT.json's "options"
    threads = torch.get_num_threads()
    print(
        f"{TOOL} {deepctr_torch.__version__}, torch {torch.__version__}, {threads} thread(s)", file=sys.stderr
    )
    train, test, meta = peer_io.load(args.data)
    model, names = build(args, meta)

    clock.extra["flops_per_sample"] = flops_per_sample(model, train, args.batch_size)
    n, cap = len(train["label"]), args.max_batches * args.batch_size
    if not cap or cap >= n:  # the plain case: one fit() over every training row
        with clock.train(n * args.epochs):
            model.fit(
                {name: train[name] for name in names},
                train["label"],
                batch_size=args.batch_size,
                epochs=args.epochs,
                verbose=2,
                shuffle=True,
            )
    else:  # fit() cannot stop an epoch early: give each epoch's fit() `cap` random rows
        rng = np.random.default_rng(args.seed)
        for _ in range(args.epochs):
            rows = np.sort(rng.choice(n, cap, replace=False))
            with clock.train(cap):
                model.fit(
                    {name: train[name][rows] for name in names},
                    train["label"][rows],
                    batch_size=args.batch_size,
                    epochs=1,
                    verbose=2,
                    shuffle=True,
                )

    return model.predict({name: test[name] for name in names}, batch_size=args.batch_size).reshape(-1)


if __name__ == "__main__":
    peer_io.run(main, TOOL, peer_io.parser(__doc__).parse_args())
