"""Export MovieLens-100K under the DIN protocol as plain arrays every peer trains on.

    python benchmarks/peers/prepare.py --root ../shared/data/ml-100k --out benchmarks/peers/data

The arrays are ctrbench's own split of ``dataset=movielens`` (rating ≥ 4 positive, 80 % of the
users to training, 20 % to test, no validation users, the 50 most recent earlier ratings as the
history, seed 0), so ctrbench, the plain-PyTorch loop and the peers see the same rows.
``train.npz`` / ``test.npz`` hold, per row:

* ``user`` (GAUC group, not a feature), ``item``, ``cat`` — int64, ids ≥ 1 (0 = padding);
* ``hist_item``, ``hist_cat`` — int64 (n, max_len), time order, valid positions first, 0 after;
* ``hist_len`` — int64, valid positions;
* ``neg_hist_item``, ``neg_hist_cat`` — DIEN auxiliary-loss negatives aligned with the history
  (ctrbench's epoch-0 draw; padded positions 0);
* ``label`` — float32 0/1.

``meta.json`` gives the vocabularies (padding row included) and the protocol.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from ctrbench import registry
from ctrbench.engine.data import ArrayBatches

PROTOCOL = {"max_len": 50, "test_frac": 0.2, "val_frac": 0.0, "seed": 0}
COLUMNS = (
    "user",
    "item",
    "cat",
    "hist_item",
    "hist_cat",
    "hist_len",
    "neg_hist_item",
    "neg_hist_cat",
    "label",
)


def dataset_options(root: str) -> dict[str, object]:
    """``dataset.*`` options that give ctrbench this split (also used by ``compare.py``)."""
    return {"root": str(Path(root).resolve()), **PROTOCOL}


def export(root: str, out: Path) -> dict[str, object]:
    data = registry.build("dataset", "movielens", dataset_options(root)).load()
    if data.resample is not None:
        data.resample(0)
    out.mkdir(parents=True, exist_ok=True)
    schema = data.schema
    for split in ("train", "test"):
        rows = ArrayBatches(getattr(data, split), schema, data.sequences)
        batch = rows[torch.arange(len(rows))]
        width = batch["hist_item"].shape[1]
        arrays = {}
        for name in COLUMNS:
            a = batch[name].numpy()
            if a.ndim == 2 and width < PROTOCOL["max_len"]:
                a = np.pad(a, ((0, 0), (0, PROTOCOL["max_len"] - width)))
            arrays[name] = a.astype(np.float32 if name == "label" else np.int64)
        np.savez(out / f"{split}.npz", **arrays)
    vocab = schema.tables()
    meta = {
        "dataset": "movielens (ml-100k), DIN protocol",
        **PROTOCOL,
        "n_items": vocab["item"],
        "n_cats": vocab["cat"],
        "rows": {s: len(getattr(data, s)) for s in ("train", "test")},
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    return meta


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", required=True, help="folder with MovieLens-100K's u.data and u.item")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "data")
    args = parser.parse_args()
    print(json.dumps(export(args.root, args.out), indent=2))


if __name__ == "__main__":
    main()
