"""Export a trained run for serving: a TorchScript module plus ``manifest.json``.

    python -m ctrbench.export RUN_DIR [--out DIR] [--candidates 256]

The module is traced (``torch.jit.trace``) at one fixed shape — ``candidates`` rows, histories
padded to the schema's ``max_len`` — with ctrbench's compiled kernels switched off, so it holds
torch operations only and runs wherever torch runs, without ctrbench. It takes the batch tensors
in the manifest's ``inputs`` order and returns click probabilities. The regularizer's ``encode``
hook (the frequency filter's id mapping) is traced into it. :class:`ExportedScorer` loads an export
and scores one user against any number of candidates (padded / chunked to the traced shape),
giving the probabilities of the checkpoint (tested).

The manifest holds the format, the traced shape, the input names, the schema (fields, vocabularies,
shared tables, history cap), the run's full config and the torch / ctrbench versions.

The run folder is read as data: its checkpoint through ``torch.load(weights_only=True)``
(:func:`ctrbench.scoring.load_checkpoint_state`), so a file that would need code to unpickle ends the
command with one line naming it, and nothing in it runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ctrbench.nn import native
from ctrbench.schema import Field, Schema
from ctrbench.scoring import Ids, Scorer, build_batch

MANIFEST = "manifest.json"
MODULE = "model.pt"
FORMAT = "torchscript-trace/1"


class ServingModule(nn.Module):
    """``forward(*tensors)`` (in ``names`` order) → probabilities: encode hook, model, sigmoid."""

    def __init__(self, model: nn.Module, names: list[str], encode: Any = None) -> None:
        super().__init__()
        self.model, self.names, self.encode = model, names, encode

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        batch = dict(zip(self.names, tensors, strict=True))
        if self.encode is not None:
            batch = self.encode(batch)
        out = self.model(batch)
        return torch.sigmoid(out[0] if isinstance(out, tuple) else out)


def _example_user(schema: Schema) -> dict[str, Any]:
    """A user whose history fills the whole cap (the traced shape), ids 1."""
    user: dict[str, Any] = {f.name: 1 for f in schema.categorical}
    for f in schema.behaviours:
        user[f.name] = [1] * schema.max_len
    for f in schema.dense:
        user[f.name] = [0.0] * f.dim
    return user


def export_run(run_dir: str | Path, out: str | Path | None = None, candidates: int = 256) -> Path:
    """Trace the run's best checkpoint; returns the export folder (default ``RUN_DIR/export``)."""
    run_dir = Path(run_dir)
    scorer = Scorer.from_run(run_dir)
    schema = scorer.schema
    cand = {f.name: np.ones(candidates, dtype=np.int64) for f in schema.categorical}
    batch = build_batch(schema, _example_user(schema), cand, width=schema.max_len)
    names = sorted(batch)
    module = ServingModule(scorer.model.eval(), names, scorer.encode)
    with native.disabled(), torch.no_grad(), warnings.catch_warnings():
        # shape-dependent Python branches are fixed at the traced shape, which is what is exported
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(module, tuple(batch[n] for n in names), check_trace=False)
    folder = Path(out) if out is not None else run_dir / "export"
    folder.mkdir(parents=True, exist_ok=True)
    traced.save(str(folder / MODULE))
    import ctrbench

    manifest = {
        "format": FORMAT,
        "module": MODULE,
        "candidates": candidates,
        "inputs": names,
        "schema": {
            "fields": [dataclasses.asdict(f) for f in schema.fields],
            "group": schema.group,
            "label": schema.label,
            "max_len": schema.max_len,
            "source": schema.source,
        },
        "config": scorer.config,
        "run": str(run_dir),
        "versions": {"torch": torch.__version__, "ctrbench": getattr(ctrbench, "__version__", "")},
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return folder


def schema_of(manifest: Mapping[str, Any]) -> Schema:
    s = manifest["schema"]
    fields = tuple(Field(**f) for f in s["fields"])
    return Schema(fields, group=s["group"], label=s["label"], max_len=s["max_len"], source=s.get("source"))


class ExportedScorer:
    """``ExportedScorer.load(folder).score(user, candidates)``: :meth:`Scorer.score` on an export."""

    def __init__(self, module: torch.jit.ScriptModule, manifest: Mapping[str, Any]) -> None:
        self.module, self.manifest = module, manifest
        self.schema = schema_of(manifest)
        self.rows = int(manifest["candidates"])

    @classmethod
    def load(cls, folder: str | Path) -> ExportedScorer:
        folder = Path(folder)
        path = folder / MANIFEST
        if not path.is_file():
            raise FileNotFoundError(f"no {MANIFEST} in {folder} (made by python -m ctrbench.export?)")
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ValueError(f"{path}: not a readable JSON manifest ({exc})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
            raise ValueError(f"{path}: format {found!r} is not {FORMAT!r}")
        module = manifest.get("module")
        # a file of this folder by its bare name: a manifest never points the loader elsewhere
        if not isinstance(module, str) or module in ("", ".", "..") or Path(module).name != module:
            raise ValueError(f"{path}: 'module' must name a file in {folder}, not {module!r}")
        try:
            traced = torch.jit.load(str(folder / module), map_location="cpu")
        except (RuntimeError, OSError, ValueError) as exc:
            first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
            raise ValueError(f"{folder / module}: not a TorchScript module ({first.strip()})") from None
        return cls(traced, manifest)

    @torch.inference_mode()
    def score(self, user: Mapping[str, Any], candidates: Mapping[str, Ids]) -> np.ndarray:
        n = len(next(iter(candidates.values())))
        out = []
        for start in range(0, n, self.rows):  # chunks of the traced size, the last one padded
            part = {k: np.asarray(v)[start : start + self.rows] for k, v in candidates.items()}
            real = len(next(iter(part.values())))
            part = {k: np.resize(v, self.rows) if real < self.rows else v for k, v in part.items()}
            batch = build_batch(self.schema, user, part, width=self.schema.max_len)
            probs = self.module(*(batch[name] for name in self.manifest["inputs"]))
            out.append(probs[:real].float().numpy())
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ctrbench.export", description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a finished run folder (result.json and a checkpoint)")
    parser.add_argument("--out", default=None, help="export folder (default: RUN/export)")
    parser.add_argument("--candidates", type=int, default=256, help="rows of the traced shape")
    args = parser.parse_args(argv)
    try:
        folder = export_run(args.run, args.out, args.candidates)
    except (FileNotFoundError, ValueError) as exc:
        sys.exit(f"ctrbench.export: {exc}")
    print(f"wrote {folder / MODULE} and {folder / MANIFEST}")


if __name__ == "__main__":
    main()
