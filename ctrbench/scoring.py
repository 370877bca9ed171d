"""Scoring for serving: one user's history and many candidate items → click probabilities.

The DIN paper's serving case: a user arrives with their behaviour history and the system ranks a few
hundred candidate ads. :class:`Scorer` builds one batch — the user's fields and history repeated per
candidate, the candidate fields per row — and runs the trained model once (eval mode, no autograd),
through the same regularizer ``encode`` hook (e.g. the frequency filter's OOV mapping) as evaluation,
so its probabilities are those of the training-time forward pass.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import nn

from ctrbench.results.record import RESULT_FILE, read_result
from ctrbench.schema import Schema

Ids = Sequence[int] | np.ndarray | torch.Tensor


class Scorer:
    """``score(user, candidates)`` → probabilities, one per candidate.

    ``user``: the user-side categorical fields (``{"user": 7, "user_seg": 2}``) and the behaviour
    sequences in time order, most recent last (``{"hist_item": [...], "hist_cat": [...]}``; only the
    last ``schema.max_len`` are used). ``candidates``: the candidate-side fields, one array per field
    (``{"item": [...], "cat": [...], "ctx": [...]}``); a categorical field given in neither is 0.
    """

    def __init__(
        self, model: nn.Module, schema: Schema, encode: Any = None, config: Mapping[str, Any] | None = None
    ) -> None:
        self.model = model.eval()
        self.schema = schema
        self.encode = encode
        self.config = config  # the run's config, when made by from_run
        self.device = next(model.parameters()).device

    @classmethod
    def from_run(cls, run_dir: str | Path, checkpoint: str | Path | None = None) -> Scorer:
        """A scorer for a finished run folder: its ``result.json`` config, its best checkpoint."""
        return load_run(run_dir, checkpoint)[0]

    def batch(self, user: Mapping[str, Any], candidates: Mapping[str, Ids]) -> dict[str, torch.Tensor]:
        """The model's input batch: one row per candidate."""
        return {k: v.to(self.device) for k, v in build_batch(self.schema, user, candidates).items()}

    @torch.inference_mode()
    def score(self, user: Mapping[str, Any], candidates: Mapping[str, Ids]) -> np.ndarray:
        batch = self.batch(user, candidates)
        if self.encode is not None:
            batch = self.encode(batch)
        out = self.model(batch)
        logits = out[0] if isinstance(out, tuple) else out
        return torch.sigmoid(logits).float().cpu().numpy()


def build_batch(
    schema: Schema, user: Mapping[str, Any], candidates: Mapping[str, Ids], width: int | None = None
) -> dict[str, torch.Tensor]:
    """One row per candidate: the user's fields and history (its last ``max_len`` behaviours,
    padded to ``width`` or its own length) repeated, the candidate fields per row, a categorical
    field given in neither 0. Sampled negatives are not inputs."""
    n = len(next(iter(candidates.values())))
    out: dict[str, torch.Tensor] = {}
    for f in schema.fields:
        if f.negative_of is not None:
            continue
        if f.kind == "sequence":
            ids = np.asarray(user.get(f.name, []), dtype=np.int64)
            hist = torch.as_tensor(ids)[-schema.max_len :]
            row = torch.zeros(max(width or len(hist), 1), dtype=torch.long)
            row[: len(hist)] = hist
            out[f.name] = row.expand(n, len(row))
            if f.length:
                out[f.length] = torch.full((n,), len(hist), dtype=torch.long)
        elif f.name in candidates:
            out[f.name] = torch.as_tensor(np.asarray(candidates[f.name]))
        elif f.kind == "dense":
            value = torch.as_tensor(np.asarray(user[f.name], dtype=np.float32)).reshape(1, -1)
            out[f.name] = value.expand(n, -1)
        else:
            out[f.name] = torch.full((n,), int(user.get(f.name, 0)), dtype=torch.long)
    return out


def load_run(run_dir: str | Path, checkpoint: str | Path | None = None) -> tuple[Scorer, Any]:
    """A finished run folder's :class:`Scorer` (its ``result.json`` config, its best checkpoint)
    and the dataset it was trained on (loaded once: the model is built from its schema)."""
    from ctrbench.engine.job import build_task, load_data

    run_dir = Path(run_dir)
    record = read_result(run_dir)
    if record is None:
        raise FileNotFoundError(f"no readable {RESULT_FILE} in {run_dir} (is it a ctrbench run folder?)")
    path = Path(checkpoint or record.get("checkpoint") or run_dir / "checkpoints" / "best.ckpt")
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path} (the run was made with checkpoint=false?)")
    cfg = OmegaConf.create(record["config"])
    data = load_data(cfg)
    task, _ = build_task(cfg, data)
    # weights_only: a run folder is data; nothing in it is unpickled as code (architecture §8)
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    task.load_state_dict(state)
    encode = getattr(task.regularizer, "encode", None)
    return Scorer(task.model, task.schema, encode, config=record["config"]), data
