"""The papers' model-inspection figures for a finished run (checkpoint + its dataset).

    python -m ctrbench.figures attention  RUN_DIR   # DIN Fig. 5: activation weight per behaviour
    python -m ctrbench.figures embeddings RUN_DIR   # DIN Fig. 6: t-SNE of item embeddings, coloured by CTR
    python -m ctrbench.figures evolution  RUN_DIR   # DIEN Fig. 3: AUGRU states (PCA), attention

Each writes a PNG into ``RUN_DIR/figures`` (or ``--out``) and prints its path. The inputs come from
the model: the user is the test user with the longest history (``--row`` picks a test row instead),
weights, embeddings and states are read from the trained model, the CTR colours are the scorer's
probabilities. matplotlib draws, scikit-learn's TSNE and PCA project.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ctrbench.results.plotting import pyplot
from ctrbench.scoring import Scorer, load_run

SIZE = (8.0, 4.5)  # inches; at DPI 100: 800 × 450 pixels
DPI = 100


def pick_row(data: Any, row: int | None) -> dict[str, torch.Tensor]:
    """One test row as a batch of 1: ``row``, or the row with the longest history."""
    from ctrbench.engine.data import ArrayBatches

    rows = ArrayBatches(data.test, data.schema, data.sequences)
    if row is None:
        row = int(np.argmax(data.test.end))  # end positions grow with the history
    return rows[torch.tensor([row])]


def _history_length(batch: dict[str, torch.Tensor], schema) -> int:
    """Valid behaviours of the batch's first row: its length field, else its non-padding ids."""
    f = schema.behaviours[0]
    return int(batch[f.length][0]) if f.length else int((batch[f.name][0] != 0).sum())


def _user_and_candidate(batch: dict[str, torch.Tensor], schema) -> tuple[dict[str, Any], dict[str, Any]]:
    n = _history_length(batch, schema)
    user: dict[str, Any] = {f.name: int(batch[f.name][0]) for f in schema.categorical}
    for f in schema.behaviours:
        user[f.name] = batch[f.name][0, :n].tolist()
    cand = {f.name: batch[f.name].numpy() for f in schema.categorical}
    return user, cand


def attention_figure(scorer: Scorer, batch: dict[str, torch.Tensor], path: Path) -> Path:
    """DIN Fig. 5: the activation weight of each behaviour for the row's candidate, in time order."""
    model = scorer.model
    if not hasattr(model, "interest"):
        raise ValueError("the attention figure needs a DIN model (one with activation weights)")
    with torch.no_grad():
        _, weights = model.interest(batch)
    n = _history_length(batch, scorer.schema)
    w = weights[0, :n].numpy()
    cats = batch["hist_cat"][0, :n].tolist()
    plt = pyplot()
    fig, ax = plt.subplots(figsize=SIZE, dpi=DPI)
    same = np.array(cats) == int(batch["cat"][0])
    ax.bar(np.flatnonzero(same), w[same], color="tab:red", label="candidate's category")
    ax.bar(np.flatnonzero(~same), w[~same], color="tab:blue", label="other categories")
    ax.legend(fontsize=8)
    ax.set_xticks(np.arange(n), [f"c{c}" for c in cats], rotation=90, fontsize=6)
    ax.set_xlabel("behaviours, oldest → newest (label: category)")
    ax.set_ylabel("activation weight")
    ax.set_title(
        f"DIN activation weights for candidate item {int(batch['item'][0])} (cat {int(batch['cat'][0])})"
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def embedding_figure(
    scorer: Scorer,
    data: Any,
    batch: dict[str, torch.Tensor],
    path: Path,
    per_cat: int = 150,
    n_cats: int = 4,
    seed: int = 0,
) -> Path:
    """DIN Fig. 6: t-SNE of learned item embeddings of the ``n_cats`` largest categories, a marker per
    category, colour = the model's predicted CTR of each item for the row's user."""
    from sklearn.manifold import TSNE

    item_cat = _item_categories(data)
    cats, counts = np.unique(item_cat[item_cat > 0], return_counts=True)
    top = cats[np.argsort(-counts)[:n_cats]]
    rng = np.random.default_rng(seed)
    items, labels = [], []
    for c in top:
        members = np.flatnonzero(item_cat == c)
        pick = rng.choice(members, size=min(per_cat, len(members)), replace=False)
        items.append(pick)
        labels.append(np.full(len(pick), c))
    items, labels = np.concatenate(items), np.concatenate(labels)
    table = scorer.model.embeddings.tables["item"].weight.detach().numpy()
    xy = TSNE(2, perplexity=min(30, len(items) - 1), random_state=seed, init="pca").fit_transform(
        table[items]
    )
    user, cand = _user_and_candidate(batch, scorer.schema)
    cand = {k: np.resize(v, len(items)) for k, v in cand.items()}
    cand["item"], cand["cat"] = items, labels
    ctr = scorer.score(user, cand)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=SIZE, dpi=DPI)
    markers = "os^Dv<>p"
    for i, c in enumerate(top):
        sel = labels == c
        sc = ax.scatter(
            xy[sel, 0],
            xy[sel, 1],
            c=ctr[sel],
            cmap="coolwarm",
            marker=markers[i % len(markers)],
            vmin=float(ctr.min()),
            vmax=float(ctr.max()),
            s=18,
            label=f"category {c}",
        )
    fig.colorbar(sc, ax=ax, label="predicted CTR for the user")
    ax.legend(fontsize=7)
    ax.set_title("t-SNE of item embeddings (marker: category)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _item_categories(data: Any) -> np.ndarray:
    """Category of every item id seen in training rows (0 where unseen)."""
    cols = data.train.columns
    item_cat = np.zeros(data.schema["item"].vocab, dtype=np.int64)
    item_cat[np.asarray(cols["item"])] = np.asarray(cols["cat"])
    return item_cat


def evolution_figure(
    scorer: Scorer, data: Any, batch: dict[str, torch.Tensor], path: Path, n_cand: int = 3
) -> Path:
    """DIEN Fig. 3: the AUGRU hidden states along the row's history for ``n_cand`` candidates of
    different categories and for "no target" (equal attention), projected to 2-D by PCA; and each
    candidate's attention score per behaviour."""
    from sklearn.decomposition import PCA

    model = scorer.model
    interest = getattr(model, "interest", None)
    if interest is None or not hasattr(interest, "evolution"):
        raise ValueError("the evolution figure needs a DIEN-family model (augru, agru, aigru, dien)")
    item_cat = _item_categories(data)
    hist_cats = set(batch["hist_cat"][0].tolist())
    options = [i for i in np.flatnonzero(item_cat) if item_cat[i] in hist_cats]
    rng = np.random.default_rng(0)
    chosen, seen = [], set()
    for i in rng.permutation(options):
        if item_cat[i] not in seen:
            chosen.append(int(i))
            seen.add(item_cat[i])
        if len(chosen) == n_cand:
            break
    k = len(chosen)
    rows = {name: t.expand(k, *t.shape[1:]).clone() for name, t in batch.items()}
    rows["item"], rows["cat"] = torch.tensor(chosen), torch.tensor([int(item_cat[i]) for i in chosen])
    n = _history_length(batch, scorer.schema)
    with torch.no_grad():
        b = model.embeddings.behaviours(rows)
        states = interest.extractor(b.keys, b.lengths)
        att = interest.attention.weights(b.query, states, b.mask)
        evolved = interest.evolution(states, att, b.lengths)[0][:, :n]
        equal = b.mask[:1].float() / b.lengths[:1, None].float()
        plain = interest.evolution(states[:1], equal, b.lengths[:1])[0][:, :n]
    paths = torch.cat([evolved, plain]).numpy()
    xy = PCA(2).fit_transform(paths.reshape(-1, paths.shape[-1])).reshape(k + 1, n, 2)
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=SIZE, dpi=DPI)
    for i in range(k + 1):
        label = f"item {chosen[i]} (cat {int(rows['cat'][i])})" if i < k else "no target"
        style = "-" if i < k else "--"
        left.plot(xy[i, :, 0], xy[i, :, 1], style, marker=".", label=label)
        left.scatter(xy[i, -1, 0], xy[i, -1, 1], marker="*", s=80)
    left.set_title("AUGRU hidden states (PCA), ★ = last")
    left.legend(fontsize=7)
    for i in range(k):
        right.plot(np.arange(n), att[i, :n].numpy(), marker=".", label=f"item {chosen[i]}")
    right.set_xlabel("behaviour (oldest → newest)")
    right.set_ylabel("attention score")
    right.set_title("attention per behaviour")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


KINDS = ("attention", "embeddings", "evolution")


def draw(kind: str, run_dir: str | Path, out: str | Path | None = None, row: int | None = None) -> Path:
    """Draw figure ``kind`` for the run; returns the PNG's path."""
    if kind not in KINDS:
        raise ValueError(f"figure {kind!r} is unknown (choices: {', '.join(KINDS)})")
    scorer, data = load_run(run_dir)
    batch = pick_row(data, row)
    folder = Path(out) if out is not None else Path(run_dir) / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{kind}.png"
    if kind == "attention":
        return attention_figure(scorer, batch, path)
    if kind == "embeddings":
        return embedding_figure(scorer, data, batch, path)
    return evolution_figure(scorer, data, batch, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ctrbench.figures", description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("run", help="a finished run folder (result.json and a checkpoint)")
    parser.add_argument("--out", default=None, help="folder for the PNG (default: RUN/figures)")
    parser.add_argument("--row", type=int, default=None, help="test row (default: the longest history)")
    args = parser.parse_args(argv)
    try:
        path = draw(args.kind, args.run, args.out, args.row)
    except (FileNotFoundError, ValueError) as exc:
        sys.exit(f"ctrbench.figures: {exc}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
