"""One ``result.json`` per training job: atomic write, tolerant recursive read."""

from __future__ import annotations

import json
import math
import os
import tempfile
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

RESULT_FILE = "result.json"

__all__ = [
    "RESULT_FILE",
    "error_line",
    "read_result",
    "read_results",
    "record_problem",
    "to_json",
    "write_result",
]


def to_json(value: Any) -> Any:
    """``value`` as plain JSON types: NaN/±inf become ``None``, numpy scalars/arrays become Python."""
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_json(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, bool | int | str):
        return value
    return str(value)  # paths, enums and other leaves


def _umask() -> int:
    """The process's umask (read by setting it and setting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_result(job_dir: str | os.PathLike[str], record: Mapping[str, Any]) -> Path:
    """Write ``record`` to ``job_dir/result.json`` atomically; returns the file's path.

    The JSON goes to a temporary file in the same folder, which ``os.replace`` then renames:
    a reader (or a Ctrl-C) sees the old file or the complete new one, never half a file. The file
    gets the mode any new file gets (``0666`` less the umask), not the temporary file's private ``0600``.
    """
    folder = Path(job_dir)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / RESULT_FILE
    text = json.dumps(to_json(record), indent=2, allow_nan=False)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".result.", suffix=".json.tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def error_line(exc: object) -> str:
    """An error as a record keeps it: ``Type: first line of the message``."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "true/false", type(None): "null"}


def _json_type(value: Any) -> str:
    return _JSON_TYPES.get(type(value), "a number")


def record_problem(record: Any) -> str | None:
    """Why parsed ``result.json`` content is not a result record, else None.

    A record is a JSON object with a ``status`` string; where present, ``config`` is an object and
    ``overrides`` and ``epochs`` are arrays (``epochs`` of objects) — what the summaries read.
    """
    if not isinstance(record, dict):
        return f"it holds {_json_type(record)}, not a JSON object"
    if not isinstance(record.get("status"), str):
        return "it has no 'status' string (not a ctrbench result record)"
    for key, kind in (("config", dict), ("overrides", list), ("epochs", list)):
        value = record.get(key)
        if value is not None and not isinstance(value, kind):
            return f"its {key!r} is {_json_type(value)}, not {_JSON_TYPES[kind]}"
    epochs = record.get("epochs") or []
    if not all(isinstance(row, dict) for row in epochs):
        return "its 'epochs' are not all JSON objects"
    return None


def read_result(job_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The record in ``job_dir/result.json``; None when it is missing, unreadable or not a result record
    (:func:`record_problem`)."""
    try:
        record = json.loads((Path(job_dir) / RESULT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if record_problem(record) is None else None


def read_results(
    root: str | os.PathLike[str], warn: Callable[[str], None] | None = None
) -> list[dict[str, Any]]:
    """Every ``result.json`` under ``root`` (recursively), each with ``"job_dir"`` added.

    A file that cannot be read or parsed, or holds no result record (:func:`record_problem`), is
    skipped with one warning line naming it: passed to ``warn`` (default: a ``RuntimeWarning``).
    """
    if warn is None:

        def warn(message: str) -> None:
            warnings.warn(message, RuntimeWarning, stacklevel=3)

    records: list[dict[str, Any]] = []
    for path in sorted(Path(root).rglob(RESULT_FILE)):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            warn(f"skipping unreadable {path}: {error_line(exc)}")
            continue
        problem = record_problem(record)
        if problem is not None:
            warn(f"skipping {path}: {problem}")
            continue
        record["job_dir"] = str(path.parent)
        records.append(record)
    return records
