"""Reading raw dataset files: checked roots, numbered lines, and one-line errors that name the file.

Every problem with the user's files becomes a :class:`DatasetError` whose message is one line
saying which file (and line) is wrong and what to do — never a bare traceback.
"""

from __future__ import annotations

import gzip
import io
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

_BUFFER = 1 << 20


class DatasetError(ValueError):
    """A problem with a dataset's raw files or options; the message is one line."""


def malformed(path: Path, line_no: int, problem: str, line: bytes | str = b"") -> DatasetError:
    """``<file>:<line>: malformed line (<problem>): <start of the line>``."""
    text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
    snippet = text.strip()[:80]
    return DatasetError(f"{path}:{line_no}: malformed line ({problem}): {snippet!r}")


def find_file(root: Path, names: Sequence[str]) -> Path | None:
    """The first of ``names`` (alternative spellings of one file) that exists in ``root``."""
    for name in names:
        if (root / name).is_file():
            return root / name
    return None


def require_files(
    root: Path, expected: dict[str, Sequence[str]], option: str = "dataset.root"
) -> dict[str, Path]:
    """Map each role (e.g. ``reviews``) to its file in ``root``, or fail listing what was expected."""
    if not root.is_dir():
        wanted = ", ".join(names[0] for names in expected.values())
        raise DatasetError(f"{option}={str(root)!r} is not a folder; expected a folder holding {wanted}")
    found = {role: find_file(root, names) for role, names in expected.items()}
    missing = [names[0] for role, names in expected.items() if found[role] is None]
    if missing:
        present = sorted(p.name for p in root.iterdir())[:12]
        raise DatasetError(
            f"{option}={str(root)!r} lacks {', '.join(missing)} (expected: "
            f"{', '.join(names[0] for names in expected.values())}; found: {', '.join(present) or 'nothing'})"
        )
    return {role: path for role, path in found.items() if path is not None}


def _open_binary(path: Path) -> io.BufferedReader:
    raw = gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")  # noqa: SIM115
    return io.BufferedReader(raw, buffer_size=_BUFFER)  # type: ignore[arg-type]


def numbered_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """``(line number, raw bytes)`` for every non-blank line of a plain or gzip file, streamed.

    A truncated or corrupt gzip stream raises :class:`DatasetError` naming the file and the last
    line read (the lines before it have been yielded already).
    """
    line_no = 0
    try:
        with _open_binary(path) as f:
            for line_no, line in enumerate(f, 1):  # noqa: B007 - line_no is reported on failure
                if line.strip():
                    yield line_no, line
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DatasetError(
            f"{path} is truncated or corrupt after line {line_no} ({type(exc).__name__}: {exc}); "
            "download it again"
        ) from exc
