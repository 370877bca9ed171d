"""Scoring for serving: one user's history and many candidate items → click probabilities.

The DIN paper's serving case: a user arrives with their behaviour history and the system ranks a few
hundred candidate ads. :class:`Scorer` builds one batch — the user's fields and history repeated per
candidate, the candidate fields per row — and runs the trained model once (eval mode, no autograd),
through the same regularizer ``encode`` hook (e.g. the frequency filter's OOV mapping) as evaluation,
so its probabilities are those of the training-time forward pass.

A run folder is data (architecture §8): its ``result.json`` is parsed as JSON and its config rebuilt
with interpolations kept literal, plugins are built by name, and its checkpoint is loaded with
``torch.load(weights_only=True)`` by :func:`load_checkpoint_state` — tensors and plain containers
only; a file that would need code to unpickle is refused with one line (:class:`RunFileError`).
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import nn

from ctrbench.registry import PluginError
from ctrbench.results.record import RESULT_FILE, read_result
from ctrbench.schema import Schema

Ids = Sequence[int] | np.ndarray | torch.Tensor
CHECKPOINT = Path("checkpoints") / "best.ckpt"  # a run's checkpoint, relative to its folder


class RunFileError(ValueError):
    """A run folder's file that is not loaded (not a plain checkpoint, weights of another model, a
    config that cannot be built here); the message is one line naming the file."""


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


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def load_checkpoint_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The ``state_dict`` of a Lightning checkpoint, read as data.

    ``torch.load(weights_only=True)`` rebuilds tensors and plain containers only: a pickle naming any
    other callable (``os.system``, a class) is refused before anything runs. Every failure — such a
    pickle, a damaged or foreign file, no ``state_dict`` of tensors — is one :class:`RunFileError` line.
    """
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        named = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f"a reference to {named.group(1)}" if named else "objects other than tensors and plain values"
        raise RunFileError(
            f"{path} is not a plain checkpoint: it holds {what}, which only code could rebuild; "
            "not loaded (a checkpoint is read as data, tensors and plain values only)"
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as exc:
        raise RunFileError(f"{path} is not a plain checkpoint (unreadable: {_first_line(exc)})") from None
    state = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise RunFileError(f"{path} is not a plain checkpoint (it holds no state_dict of tensors)")
    return state


def config_from_record(config: Any, where: str | Path) -> DictConfig:
    """A record's (resolved) config as an OmegaConf node whose strings stay literal: a ``${...}`` in a
    run folder's file is text, never an interpolation or resolver call."""

    def literal(value: Any) -> Any:
        if isinstance(value, str):
            return value.replace("${", "\\${")
        if isinstance(value, Mapping):
            return {k: literal(v) for k, v in value.items()}
        if isinstance(value, list):
            return [literal(v) for v in value]
        return value

    if not isinstance(config, Mapping):
        raise RunFileError(f"{where}: its 'config' is not a JSON object (is it a ctrbench result?)")
    return OmegaConf.create(literal(config))


def run_checkpoint(run_dir: Path, record: Mapping[str, Any]) -> Path:
    """The checkpoint inside ``run_dir`` that the record names (by its place under the job folder, so
    a copied or moved run folder uses its own file, never one at the recorded absolute path)."""
    named = record.get("checkpoint")
    if isinstance(named, str) and named:
        recorded = Path(named)
        return run_dir / recorded.parent.name / recorded.name
    return run_dir / CHECKPOINT


def load_run(run_dir: str | Path, checkpoint: str | Path | None = None) -> tuple[Scorer, Any]:
    """A finished run folder's :class:`Scorer` (its ``result.json`` config, its best checkpoint)
    and the dataset it was trained on (loaded once: the model is built from its schema).

    Raises ``FileNotFoundError`` (no record, no checkpoint) or :class:`RunFileError`, one line each."""
    from ctrbench.engine.job import build_task, load_data

    run_dir = Path(run_dir)
    record = read_result(run_dir)
    if record is None:
        raise FileNotFoundError(f"no readable {RESULT_FILE} in {run_dir} (is it a ctrbench run folder?)")
    path = Path(checkpoint) if checkpoint is not None else run_checkpoint(run_dir, record)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path} (the run was made with checkpoint=false?)")
    where = run_dir / RESULT_FILE
    state = load_checkpoint_state(path)  # before any plugin is built: a refused file costs nothing
    cfg = config_from_record(record.get("config"), where)
    try:
        data = load_data(cfg)
        task, _ = build_task(cfg, data)
    except (PluginError, OmegaConfBaseException) as exc:
        raise RunFileError(f"{where}: its config cannot be built here: {_first_line(exc)}") from None
    try:
        loaded = task.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shapes differ: the first specific line ("size mismatch for ...")
        detail = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()] or [str(exc)]
        raise RunFileError(f"{path}: its weights do not fit the run's model ({detail[0]})") from None
    if loaded.missing_keys or loaded.unexpected_keys:
        missing, extra = loaded.missing_keys, loaded.unexpected_keys
        raise RunFileError(
            f"{path}: its weights do not fit the run's model ({len(missing)} missing, {len(extra)} "
            f"unexpected, e.g. {(missing or extra)[0]})"
        )
    encode = getattr(task.regularizer, "encode", None)
    return Scorer(task.model, task.schema, encode, config=record["config"]), data
