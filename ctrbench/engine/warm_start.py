"""Warm-started retraining: ``init_from=RUN_DIR`` starts a job from a finished run's weights.

The old run is a job folder whose ``result.json`` says ``ok`` and whose reported checkpoint
``checkpoints/best.ckpt`` is intact (:func:`source`). After the new model is built, before its first
step (:func:`apply`):

- every embedding table (each ``EmbeddingBank`` table, and any other ``nn.Embedding`` whose rows are
  one table's rows, e.g. DIN's ``item_bias``) is mapped **by raw id**: row ``i`` of the new table
  takes the old row whose raw id (``DatasetSplits.vocabularies``; the old run's copy in its
  ``vocabularies/`` folder) is the same; ids the old run never saw keep their fresh initialisation,
  the padding row stays zero, and rows a regularizer adds after the vocabulary (``reg=filter``'s
  OOV row) are copied by position. A table without vocabularies on either side is copied row by row
  only when both runs trained on the same data (same data fingerprint and size); otherwise the job
  refuses in one line;
- every other parameter and buffer (MLPs, attention, GRUs, PReLU/Dice) is copied as it is;
- the optimizer starts fresh (a new log is a new optimisation problem; Adam's moments of the old run
  are not carried over).

Anything that does not fit (another model, another embedding size, a table or field the old run did
not have, a layer of another shape) stops the job before training with one line naming it; the old
run's folder is only read.

The job's own ``vocabularies/`` folder holds the raw ids of its data (when the dataset provides them):
hard links to the dataset cache's files (a copy across file systems), so a later run can start from
this one after the cache is gone.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ctrbench.engine.selection import CHECKPOINT_NAME, CheckpointError, verify_checkpoint
from ctrbench.nn.embedding import EmbeddingBank
from ctrbench.results.record import RESULT_FILE, read_result
from ctrbench.schema import DatasetSplits, Schema

VOCAB_DIR = "vocabularies"
VOCAB_INDEX = "index.json"
_PREFIX = "model."  # the task's state dict holds the model under this prefix
_DIGESTS: dict[tuple[str, int, int], str] = {}


class WarmStartError(ValueError):
    """``init_from`` names no usable run, or its model does not fit this one."""


def _sha256(path: Path) -> str:
    """sha256 of a file, memoised per process by (path, size, mtime)."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                h.update(chunk)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


@dataclass
class Source:
    """A finished run to start from: its folder, record and reported checkpoint."""

    path: Path
    record: dict[str, Any]
    checkpoint: Path
    sha256: str
    _state: dict[str, torch.Tensor] | None = field(default=None, repr=False)

    @property
    def model_name(self) -> str | None:
        return ((self.record.get("config") or {}).get("model") or {}).get("name")

    @property
    def data(self) -> str | None:
        return (self.record.get("fingerprint") or {}).get("data")

    def fingerprint(self) -> dict[str, str]:
        """What the resume rule compares: another folder or another file is another run."""
        return {"path": str(self.path), "checkpoint_sha256": self.sha256}

    def summary(self) -> dict[str, Any]:
        """Where the run starts from, for its record."""
        r = self.record
        return {
            "path": str(self.path),
            "checkpoint": str(self.checkpoint),
            "checkpoint_sha256": self.sha256,
            "run": {
                **{k: r.get(k) for k in ("model", "dataset", "reg", "act", "seed", "overrides")},
                "data": self.data,
                "epoch": r.get("best_epoch"),
                **{k: r.get(k) for k in ("test_auc", "test_gauc", "test_logloss", "finished_at")},
                "init_from": (r.get("init_from") or {}).get("path"),
            },
        }

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The old model's tensors (read as data: ``weights_only``), without the task's prefix."""
        if self._state is None:
            try:
                ckpt = torch.load(self.checkpoint, map_location="cpu", weights_only=True)
            except Exception as exc:  # a damaged file: one line
                raise WarmStartError(
                    f"init_from={self.path}: {self.checkpoint} is unreadable: {exc}"
                ) from None
            state = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
            if not isinstance(state, dict):
                raise WarmStartError(f"init_from={self.path}: {self.checkpoint} holds no state_dict")
            self._state = {k[len(_PREFIX) :]: v for k, v in state.items() if k.startswith(_PREFIX)}
        return self._state

    def vocabularies(self) -> dict[str, np.ndarray] | None:
        try:
            return read_vocabularies(self.path)
        except (OSError, ValueError) as exc:
            raise WarmStartError(f"init_from={self.path}: its {VOCAB_DIR}/ is unreadable: {exc}") from None


def own_folder(init_from: Any, out_dir: Path) -> bool:
    """Whether ``init_from`` is the job folder itself (the job would overwrite the run it starts from)."""
    if init_from is None or str(init_from).strip() == "":
        return False
    return Path(str(init_from)).expanduser().resolve() == Path(out_dir).expanduser().resolve()


def source(init_from: Any, out_dir: Path) -> Source | None:
    """The run ``init_from`` names (None when unset); :class:`WarmStartError` in one line when it is
    not a finished job folder with its reported checkpoint — a sweep folder (name one of its jobs),
    a failed or unfinished run, a run kept without checkpoint (``checkpoint=false``) — or when it is
    this job's own folder (which the job would overwrite)."""
    if init_from is None or str(init_from).strip() == "":
        return None
    path = Path(str(init_from)).expanduser().resolve()
    said = f"init_from={init_from}"
    if not path.is_dir():
        raise WarmStartError(f"{said}: no such folder (a finished job's folder, holding result.json)")
    if own_folder(init_from, out_dir):
        raise WarmStartError(f"{said} is this job's own folder: write the warm-started run to another one")
    if not (path / RESULT_FILE).is_file():
        jobs = sorted(p.parent.name for p in path.glob(f"*/{RESULT_FILE}"))
        if jobs:
            shown = ", ".join(jobs[:5]) + (", ..." if len(jobs) > 5 else "")
            raise WarmStartError(
                f"{said} is a sweep folder (jobs {shown}): name one job's folder, "
                f"e.g. init_from={path / jobs[0]}"
            )
        raise WarmStartError(f"{said} holds no {RESULT_FILE} (not a ctrbench job folder)")
    record = read_result(path)
    if record is None:
        raise WarmStartError(f"{said}: its {RESULT_FILE} is unreadable or not a run record")
    if record.get("status") != "ok":
        raise WarmStartError(
            f"{said}: its run is {record.get('status')!r}, not 'ok' (start from a finished run)"
        )
    checkpoint = path / "checkpoints" / CHECKPOINT_NAME
    if not record.get("checkpoint") or not checkpoint.is_file():
        raise WarmStartError(
            f"{said} has no checkpoints/{CHECKPOINT_NAME} "
            "(the run kept none: checkpoint=false, or it was removed)"
        )
    try:
        verify_checkpoint(checkpoint, int(record["best_epoch"]))
    except (CheckpointError, KeyError, TypeError, ValueError) as exc:
        raise WarmStartError(f"{said}: {exc}") from None
    return Source(path, record, checkpoint, _sha256(checkpoint))


# ---- the raw ids of a run's data -------------------------------------------------------------------
def save_vocabularies(out_dir: Path, data: DatasetSplits) -> dict[str, Any] | None:
    """``out_dir/vocabularies/``: one ``.npy`` per table (hard-linked from the dataset cache where
    possible) and ``index.json``; None (and no folder) when the dataset provides no vocabularies."""
    folder = out_dir / VOCAB_DIR
    shutil.rmtree(folder, ignore_errors=True)
    if not data.vocabularies:
        return None
    tmp = out_dir / f".{VOCAB_DIR}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    files = {}
    for i, (table, vocab) in enumerate(sorted(data.vocabularies.items())):
        name = files[table] = f"{i:03d}.npy"
        cached = getattr(vocab, "filename", None)  # a map of the cache's own .npy: link it
        linked = False
        if cached and vocab.dtype.kind == "U":
            try:
                os.link(cached, tmp / name)
                check = np.load(tmp / name, mmap_mode="r", allow_pickle=False)
                linked = check.shape == vocab.shape and check.dtype == vocab.dtype
            except (OSError, ValueError):
                linked = False
        if not linked:
            (tmp / name).unlink(missing_ok=True)
            np.save(tmp / name, np.asarray(vocab).astype(str), allow_pickle=False)
    (tmp / VOCAB_INDEX).write_text(json.dumps({"tables": files}, indent=1, sort_keys=True))
    os.replace(tmp, folder)
    return {"folder": VOCAB_DIR, "rows": {t: len(v) for t, v in sorted(data.vocabularies.items())}}


def read_vocabularies(run_dir: Path) -> dict[str, np.ndarray] | None:
    """A run folder's vocabularies (read as data, no pickle); None when it kept none."""
    folder = Path(run_dir) / VOCAB_DIR
    if not (folder / VOCAB_INDEX).is_file():
        return None
    index = json.loads((folder / VOCAB_INDEX).read_text())
    out = {}
    for table, name in (index.get("tables") or {}).items():
        if Path(name).name != name:
            raise ValueError(f"{VOCAB_INDEX} names {name!r}, not a file of the folder")
        vocab = np.load(folder / name, allow_pickle=False)
        if vocab.ndim != 1 or vocab.dtype.kind != "U":
            raise ValueError(f"{name} (table {table!r}) is not a 1-D array of strings")
        out[table] = vocab
    return out


# ---- mapping the old model onto the new one ------------------------------------------------------
@dataclass
class _Rows:
    """Row ``new[k]`` of a new table takes row ``old[k]`` of the old one."""

    new: torch.Tensor
    old: torch.Tensor
    summary: dict[str, Any]


def _shape(t: torch.Tensor | tuple[int, ...]) -> str:
    dims = tuple(t.shape) if isinstance(t, torch.Tensor) else t
    return "(" + ", ".join(map(str, dims)) + ")"


def bank_tables(model: nn.Module) -> dict[str, str]:
    """State-dict key → schema table for every ``EmbeddingBank`` table of the model."""
    out = {}
    for prefix, module in model.named_modules():
        if isinstance(module, EmbeddingBank):
            for table in module.tables:
                out[f"{prefix}.tables.{table}.weight" if prefix else f"tables.{table}.weight"] = table
    return out


def _other_embeddings(model: nn.Module, banked: set[str]) -> list[str]:
    keys = []
    for prefix, module in model.named_modules():
        key = f"{prefix}.weight" if prefix else "weight"
        if isinstance(module, nn.Embedding) and key not in banked:
            keys.append(key)
    return keys


def _by_raw_id(
    table: str, old_vocab: np.ndarray, new_vocab: np.ndarray, old_rows: int, new_rows: int, said: str
) -> _Rows:
    old_extra, new_extra = old_rows - len(old_vocab), new_rows - len(new_vocab)
    if old_extra < 0 or new_extra < 0:
        which = "the old run's" if old_extra < 0 else "this data's"
        raise WarmStartError(
            f"{said}: table '{table}': {which} vocabulary is longer than its embedding table"
        )
    if old_extra != new_extra:
        raise WarmStartError(
            f"{said}: table '{table}' has {old_extra} row(s) after its vocabulary in the old run, "
            f"{new_extra} now (a regularizer's extra rows, e.g. reg=filter's OOV row, must agree)"
        )
    old_ids = np.asarray(old_vocab[1:]).astype(str)
    new_ids = np.asarray(new_vocab[1:]).astype(str)
    order = np.argsort(old_ids, kind="stable")
    ranked = old_ids[order]
    if len(ranked):
        at = np.minimum(np.searchsorted(ranked, new_ids), len(ranked) - 1)
        hit = ranked[at] == new_ids
    else:
        at, hit = np.zeros(len(new_ids), dtype=np.int64), np.zeros(len(new_ids), dtype=bool)
    new = 1 + np.flatnonzero(hit)
    old = 1 + order[at[hit]]
    kept = len(new)
    # rows a regularizer appends after the vocabulary (an OOV row) keep their position
    new = np.concatenate([new, len(new_vocab) + np.arange(new_extra)])
    old = np.concatenate([old, len(old_vocab) + np.arange(old_extra)])
    summary = {
        "by": "raw id",
        "rows": new_rows,
        "kept": kept,
        "new": len(new_ids) - kept,
        "dropped": len(old_ids) - kept,
    }
    return _Rows(torch.as_tensor(new, dtype=torch.long), torch.as_tensor(old, dtype=torch.long), summary)


def _by_row(rows: int) -> _Rows:
    index = torch.arange(1, rows, dtype=torch.long)
    return _Rows(index, index, {"by": "row", "rows": rows, "kept": rows - 1, "new": 0, "dropped": 0})


def apply(
    model: nn.Module,
    schema: Schema,
    data: DatasetSplits,
    src: Source,
    model_name: str,
    data_fingerprint: str,
    copy: bool = True,
) -> dict[str, Any]:
    """Start ``model`` from ``src``'s weights (module docstring); returns what was kept per table.

    With ``copy=False`` (a job resuming from its own ``last.ckpt``, which holds its weights) everything
    is checked and counted, and nothing is copied."""
    said = f"init_from={src.path}"
    if src.model_name != model_name:
        raise WarmStartError(
            f"{said}: the old run trained model {src.model_name!r}, this job model {model_name!r}"
        )
    old = src.state_dict()
    new = model.state_dict()  # detached tensors sharing the parameters' storage
    banked = bank_tables(model)
    new_tables = set(banked.values())
    lacking = sorted({banked[k] for k in banked if k not in old})
    if lacking:
        fields = [f.name for f in schema.fields if f.kind != "dense" and f.table in lacking]
        raise WarmStartError(
            f"{said}: embedding table(s) {', '.join(lacking)} (field(s) {', '.join(fields)}) are not in "
            "the old run's model: its data had no such field"
        )
    gone = sorted(k for k in old if k not in new and (k.startswith("tables.") or ".tables." in k))
    if gone:
        raise WarmStartError(f"{said}: the old run's {', '.join(gone)} has no field in this job's data")
    only_new, only_old = sorted(set(new) - set(old)), sorted(set(old) - set(new))
    if only_new or only_old:
        parts = [f"only in this model: {', '.join(only_new)}"] if only_new else []
        parts += [f"only in the old run's: {', '.join(only_old)}"] if only_old else []
        raise WarmStartError(f"{said}: the models differ ({'; '.join(parts)})")
    for key, table in banked.items():
        if old[key].shape[1:] != new[key].shape[1:]:
            raise WarmStartError(
                f"{said}: embedding table '{table}' has width {old[key].shape[1]} in the old run, "
                f"{new[key].shape[1]} now (model.emb_dim must agree)"
            )
    # tables: how the rows map
    table_rows = {t: new[k].shape[0] for k, t in banked.items()}
    old_table_rows = {t: old[k].shape[0] for k, t in banked.items()}
    old_vocab = src.vocabularies() or {}
    new_vocab = data.vocabularies or {}
    same_data = src.data is not None and src.data == data_fingerprint
    rows: dict[str, _Rows] = {}
    for table in sorted(new_tables):
        if table in old_vocab and table in new_vocab:
            rows[table] = _by_raw_id(
                table, old_vocab[table], new_vocab[table], old_table_rows[table], table_rows[table], said
            )
        elif same_data and old_table_rows[table] == table_rows[table]:
            rows[table] = _by_row(table_rows[table])
        else:
            side = (
                "either run's data"
                if table not in old_vocab and table not in new_vocab
                else ("the old run's data" if table not in old_vocab else "this job's data")
            )
            raise WarmStartError(
                f"{said}: table '{table}' cannot be mapped: {side} names no raw ids (vocabularies) and "
                f"the data differ ({src.data} -> {data_fingerprint}); rows are copied as they are only on "
                "the same data"
            )
    # other embeddings whose rows are one table's rows (e.g. a per-item bias); one that matches no
    # table (hashed buckets) is copied like a dense layer when its shape agrees
    row_keys = dict(banked)
    for key in _other_embeddings(model, set(banked)):
        n_new, n_old = new[key].shape[0], old[key].shape[0]
        match = [t for t in rows if table_rows[t] == n_new and old_table_rows[t] == n_old]
        if len(match) == 1:
            row_keys[key] = match[0]
        elif old[key].shape != new[key].shape:
            raise WarmStartError(
                f"{said}: embedding '{key}' has shape {_shape(old[key])} in the old run, "
                f"{_shape(new[key])} now, and its rows are not one table's rows"
            )
    for key in new:
        if key in row_keys and old[key].shape[1:] != new[key].shape[1:]:
            raise WarmStartError(
                f"{said}: embedding '{key}' has rows of shape {_shape(old[key].shape[1:])} in the old run, "
                f"{_shape(new[key].shape[1:])} now"
            )
        if key not in row_keys and old[key].shape != new[key].shape:
            raise WarmStartError(
                f"{said}: layer '{key}' has shape {_shape(old[key])} in the old run, {_shape(new[key])} now"
            )
    if copy:
        with torch.no_grad():
            for key, target in new.items():
                value = old[key].to(device=target.device, dtype=target.dtype)
                if key in row_keys:
                    r = rows[row_keys[key]]
                    target[r.new.to(target.device)] = value[r.old.to(target.device)]
                else:
                    target.copy_(value)
    return {
        **src.summary(),
        "applied": copy,
        "tables": {t: r.summary for t, r in rows.items()},
        "row_mapped": sorted(row_keys),
        "copied": sorted(k for k in new if k not in row_keys),
    }
