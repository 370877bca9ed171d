"""The FuxiCTR peer: FuxiCTR 2.3.10's own ``DIN`` / ``DIEN`` classes trained on prepare.py's arrays.

Setup (once)::

    benchmarks/peers/setup_fuxictr.sh    # benchmarks/peers/.venv-fuxictr: torch 2.13.0 CPU, fuxictr 2.3.10

The wheel holds the framework (FeatureMap, BaseModel, layers) but not the model classes, which
live in the reczoo/FuxiCTR GitHub repository's ``model_zoo/DIN/src/DIN.py`` and
``model_zoo/DIEN/src/DIEN.py``. Get a checkout anywhere outside this repository; the repository
has no ``v2.3.10`` tag, so take commit 0245987fdc1d43c36164ea496a02324885a8557a (the newest commit
with ``__version__ = "2.3.10"``; its ``fuxictr/pytorch`` models and layers are identical to the
wheel's), e.g. ``git clone <reczoo/FuxiCTR> /work/fuxictr && git -C /work/fuxictr checkout 0245987``.
Pass it as ``--fuxictr-repo`` (or set ``FUXICTR_REPO``); the two model files are loaded from it
by path, the framework they import comes from the installed wheel.

Run::

    OMP_NUM_THREADS=1 benchmarks/peers/.venv-fuxictr/bin/python benchmarks/peers/run_fuxictr.py \\
        --fuxictr-repo /work/fuxictr --data benchmarks/peers/data --model din|dien \\
        --out benchmarks/peers/out/fuxictr_din.json --threads 1 [--max-batches 40] [--aux]

The models are built from a ``fuxictr.features.FeatureMap`` filled in memory (no CSV / FuxiCTR
preprocessing): categorical ``item`` and ``cat`` (vocabularies from meta.json, padding index 0),
sequences ``hist_item`` / ``hist_cat`` (max_len 50, padding 0) sharing the item / cat embedding
tables (``share_embedding``), label ``label``; embedding_dim 16. Batches are dicts of tensors
keyed by feature name plus ``label``, as FuxiCTR's ``BatchCollator`` yields them (its
``get_inputs`` / ``get_labels`` read them; ids are handed over as int64 rather than the float
columns of its npz loader, the model casts them with ``.long()`` either way).

* ``din``: DIN with target ``("item", "cat")`` and sequence ``("hist_item", "hist_cat")``,
  attention MLP 80-40 on FuxiCTR's ``DIN_Attention`` input [q, k, q−k, q⊙k], no softmax (the DIN
  paper), DNN 200-80 over [e_item, e_cat, pooled hist_item, pooled hist_cat]; ``--activation``
  (PReLU / Dice) in both MLPs.
* ``dien``: DIEN with ``gru_type="AUGRU"``, ``attention_type="din_attention"`` (the 80-40 MLP,
  ``--activation``), ``use_attention_softmax=True`` (FuxiCTR's default and DIEN eq. 9), GRU
  width 32 (= the behaviour embedding [e_item, e_cat]), ``enable_sum_pooling=False`` (FuxiCTR's
  default), DNN 200-80 over [final AUGRU state, e_item, e_cat]. The auxiliary loss is off
  (``aux_loss_alpha=0``, no negative sequences) because with it FuxiCTR 2.3.10 crashes;
  ``--aux`` sets ``aux_loss_alpha=1`` with ``neg_hist_item`` / ``neg_hist_cat`` as
  ``dien_neg_seq_field`` (sharing the item / cat tables) to reproduce that crash, which
  ``peer_io.run`` records as the result.

Both: Adam lr 1e-3, BCE, no regularizer, no dropout, and ``batch_norm=False`` in the DNN (DIEN's
class defaults to True; the comparison's MLP has none). FuxiCTR's default initialisation
(embeddings N(0, 1e-4), Linear Xavier-normal) and FuxiCTR's gradient clipping (max norm 10, the
default of its ``fit``) are kept. Training shuffles each epoch (seeded by ``--seed``, as is
FuxiCTR's ``seed_everything``).

What is timed: only the calls ``model.train_step(batch)`` — FuxiCTR's own step (zero_grad,
forward, loss incl. regularization term, backward, clip_grad_norm_, Adam step). Not timed: model
construction, cutting the batch out of the in-memory arrays, and the test predictions (FuxiCTR's
``fit`` would also evaluate and checkpoint at epoch end; it is not used). Test predictions are
the model's ``y_pred`` (sigmoid output) in eval mode without gradients, in test.npz order.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import sys
import tempfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import peer_io
import torch

TOOL = "fuxictr"
ACTIVATIONS = {"prelu": "PReLU", "dice": "Dice"}
MAX_GRADIENT_NORM = 10.0  # FuxiCTR BaseModel.fit's default, which train_step reads
EVAL_BATCH = 4096


def load_model_class(repo: Path, name: str) -> type:
    """``name`` (DIN | DIEN) from ``repo/model_zoo/<name>/src/<name>.py``, loaded by path (both
    model folders name their package ``src``)."""
    path = repo / "model_zoo" / name / "src" / f"{name}.py"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: --fuxictr-repo must be a FuxiCTR checkout")
    spec = importlib.util.spec_from_file_location(f"fuxictr_model_zoo_{name.lower()}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


def feature_map(meta: dict, data: Path, *, negatives: bool):
    """The FeatureMap FuxiCTR's preprocessing would write, built in memory."""
    from fuxictr.features import FeatureMap

    fmap = FeatureMap("ctrbench_movielens", str(data))
    vocab = {"item": meta["n_items"], "cat": meta["n_cats"]}
    features = OrderedDict()
    for name in ("item", "cat"):
        features[name] = {
            "source": "item",
            "type": "categorical",
            "vocab_size": vocab[name],
            "padding_idx": 0,
        }
    sequences = ["hist_item", "hist_cat"] + (["neg_hist_item", "neg_hist_cat"] if negatives else [])
    for name in sequences:
        base = name.rsplit("_", 1)[1]
        features[name] = {
            "source": "user",
            "type": "sequence",
            "vocab_size": vocab[base],
            "max_len": meta["max_len"],
            "padding_idx": 0,
            "share_embedding": base,
        }
    fmap.features = features
    fmap.labels = ["label"]
    fmap.default_emb_dim = peer_io.EMB_DIM
    fmap.num_fields = fmap.get_num_fields()
    fmap.total_features = sum(spec["vocab_size"] for name, spec in features.items() if name in vocab)
    fmap.set_column_index()
    return fmap


def build(args, fmap):
    act = ACTIVATIONS[args.activation]
    common = {
        "gpu": -1,
        "task": "binary_classification",
        "optimizer": "adam",
        "loss": "binary_crossentropy",
        "learning_rate": peer_io.LR,
        "embedding_dim": peer_io.EMB_DIM,
        "embedding_regularizer": 0,
        "net_regularizer": 0,
        "net_dropout": 0,
        "batch_norm": False,
        "dnn_hidden_units": list(peer_io.MLP_HIDDEN),
        "dnn_activations": act,
        "metrics": ["AUC"],
        "verbose": 0,
        "model_root": tempfile.gettempdir(),  # checkpoints only written by fit(), which is not used
    }
    repo = Path(args.fuxictr_repo)
    if args.model == "din":
        model = load_model_class(repo, "DIN")(
            fmap,
            model_id="DIN",
            attention_hidden_units=list(peer_io.ATT_HIDDEN),
            attention_hidden_activations=act,
            attention_output_activation=None,
            attention_dropout=0,
            din_target_field=[("item", "cat")],
            din_sequence_field=[("hist_item", "hist_cat")],
            din_use_softmax=False,
            **common,
        )
    else:
        model = load_model_class(repo, "DIEN")(
            fmap,
            model_id="DIEN",
            dien_target_field=[("item", "cat")],
            dien_sequence_field=[("hist_item", "hist_cat")],
            dien_neg_seq_field=[("neg_hist_item", "neg_hist_cat")] if args.aux else [],
            gru_type="AUGRU",
            enable_sum_pooling=False,
            attention_type="din_attention",
            attention_hidden_units=list(peer_io.ATT_HIDDEN),
            attention_activation=act,
            attention_dropout=0,
            use_attention_softmax=True,
            aux_hidden_units=[100, 50],
            aux_activation="ReLU",
            aux_loss_alpha=1.0 if args.aux else 0,
            **common,
        )
    model._max_gradient_norm = MAX_GRADIENT_NORM
    return model


def main(args, clock: peer_io.Clock) -> np.ndarray:
    torch.set_num_threads(args.threads)
    if not args.fuxictr_repo:
        raise ValueError("--fuxictr-repo (or FUXICTR_REPO) must name a FuxiCTR checkout")
    from fuxictr.pytorch.torch_utils import seed_everything

    train, test, meta = peer_io.load(args.data)
    aux = args.model == "dien" and args.aux
    fmap = feature_map(meta, args.data, negatives=aux)
    columns = [*fmap.features, *fmap.labels]  # the batch dict's keys, in feature-map order
    train_t = {c: torch.from_numpy(train[c]) for c in columns}
    seed_everything(args.seed)
    model = build(args, fmap)

    n = len(train["label"])
    first = {c: t[: args.batch_size] for c, t in train_t.items()}
    twin = copy.deepcopy(model)  # counted on a copy: the measured run starts untouched
    clock.extra["flops_per_sample"] = peer_io.step_flops(lambda: twin.train_step(first), args.batch_size)
    gen = torch.Generator().manual_seed(args.seed)
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(n, generator=gen)
        losses = []
        for b, start in enumerate(range(0, n, args.batch_size)):
            if args.max_batches and b >= args.max_batches:
                break
            idx = order[start : start + args.batch_size]
            batch = {c: t[idx] for c, t in train_t.items()}
            with clock.train(len(idx)):
                loss = model.train_step(batch)
            losses.append(loss.item())
        mean = np.mean(losses) if losses else float("nan")
        print(f"{TOOL} {args.model}: epoch {epoch + 1}: mean train loss {mean:.4f}", file=sys.stderr)

    model.eval()
    test_t = {c: torch.from_numpy(test[c]) for c in fmap.features}
    preds = []
    with torch.no_grad():
        for start in range(0, len(test["label"]), EVAL_BATCH):
            batch = {c: t[start : start + EVAL_BATCH] for c, t in test_t.items()}
            preds.append(model.forward(batch)["y_pred"].reshape(-1).numpy())
    return np.concatenate(preds)


def cli() -> None:
    p = peer_io.parser("FuxiCTR 2.3.10's DIN / DIEN on the prepared arrays (see the module docstring).")
    p.add_argument(
        "--fuxictr-repo",
        default=os.environ.get("FUXICTR_REPO"),
        help="FuxiCTR checkout holding model_zoo/DIN and model_zoo/DIEN (default: $FUXICTR_REPO)",
    )
    p.add_argument(
        "--aux", action="store_true", help="dien: auxiliary loss on (aux_loss_alpha=1; crashes in 2.3.10)"
    )
    args = p.parse_args()
    peer_io.run(main, TOOL, args)


if __name__ == "__main__":
    cli()
