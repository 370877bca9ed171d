"""Two sweeps in one table and one report (``ctrbench compare A B``).

Each record is tagged with the folder it came from (an extra ``sweep=<name>`` override), so the same
configuration run in both folders stays two rows, labelled by folder. The summary's own rules decide
what is compared: records of different data or code are separate rows and get no RelaImpr against
each other (:func:`~ctrbench.results.summary.summarize`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

from ctrbench.results.bars import plot_relaimpr
from ctrbench.results.curves import plot_curves
from ctrbench.results.html_report import command_line, write_report
from ctrbench.results.paper import TABLES, layout, paper_key
from ctrbench.results.record import read_results
from ctrbench.results.summary import SummaryRow, summarize
from ctrbench.results.tables import print_written, render_notes, rich_table, write_tables

__all__ = ["compare", "default_out", "source_names"]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "sweep"


def source_names(dir_a: Path, dir_b: Path) -> tuple[str, str]:
    """Short names of the two folders: their last path parts, as many as it takes to tell them apart
    (``A`` and ``B`` when nothing does)."""
    a, b = Path(dir_a).resolve().parts, Path(dir_b).resolve().parts
    for n in range(1, max(len(a), len(b)) + 1):
        name_a, name_b = "/".join(a[-n:]), "/".join(b[-n:])
        if name_a != name_b:
            return name_a, name_b
    return "A", "B"


def default_out(dir_a: Path, dir_b: Path, cwd: Path | None = None) -> Path:
    """``compare-<A>-vs-<B>`` under ``cwd`` (default: the current folder)."""
    name_a, name_b = source_names(dir_a, dir_b)
    return (cwd or Path.cwd()) / f"compare-{_slug(name_a)}-vs-{_slug(name_b)}"


def _tagged(records: Sequence[Mapping[str, Any]], name: str, offset: int) -> list[dict[str, Any]]:
    """Copies of ``records`` with a ``sweep=<name>`` override and job numbers after ``offset``."""
    out = []
    for record in records:
        copy = dict(record)
        overrides = record.get("overrides")
        copy["overrides"] = [*(overrides if isinstance(overrides, list) else []), f"sweep={name}"]
        num = record.get("job_num")
        if isinstance(num, int) and not isinstance(num, bool):
            copy["job_num"] = num + offset
        out.append(copy)
    return out


def _data(records: Sequence[Mapping[str, Any]]) -> set[str]:
    fps = (r.get("fingerprint") for r in records)
    return {str(fp.get("data")) for fp in fps if isinstance(fp, Mapping) and fp.get("data") is not None}


def compare(
    dir_a: str | os.PathLike[str],
    dir_b: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    base_model: str = "base",
    console: Console | None = None,
    warn: Callable[[str], None] | None = None,
) -> tuple[list[SummaryRow], dict[str, Path]]:
    """Summarize the records of both folders together into ``out_dir`` (default: :func:`default_out`):
    ``summary.*``, the charts and ``report.html``; print the table. Returns the rows and written paths.

    Raises ``ValueError`` when a folder holds no ``result.json`` or both name the same folder.
    """
    a, b = Path(dir_a), Path(dir_b)
    if a.resolve() == b.resolve():
        raise ValueError(f"{a} and {b} are the same folder: compare two different sweeps")
    records_a, records_b = read_results(a, warn), read_results(b, warn)
    for folder, found in ((a, records_a), (b, records_b)):
        if not found:
            raise ValueError(f"no result.json found under {folder}")
    name_a, name_b = source_names(a, b)
    nums = [r.get("job_num") for r in records_a]
    offset = 1 + max((n for n in nums if isinstance(n, int) and not isinstance(n, bool)), default=-1)
    records = _tagged(records_a, name_a, 0) + _tagged(records_b, name_b, offset)
    out = Path(out_dir) if out_dir is not None else default_out(a, b)

    rows = summarize(records, base_model=base_model)
    notes = render_notes(records, rows, Path(os.path.commonpath([a.resolve(), b.resolve()])))
    data_a, data_b = _data(records_a), _data(records_b)
    if data_a and data_b and not data_a & data_b:
        notes.insert(
            0,
            f"{name_a} and {name_b} ran on different data ({', '.join(sorted(data_a))} vs "
            f"{', '.join(sorted(data_b))}): their rows are not paired, and no RelaImpr compares them.",
        )
    table_id = paper_key(records)
    laid_out = layout(table_id, records, rows) if table_id in TABLES else None
    paths = write_tables(rows, out, paper=laid_out, notes=notes)
    curves = plot_curves(records, out / "curves.png")
    if curves is not None:
        paths["curves"] = curves
    bars = plot_relaimpr(records, out / "relaimpr.png", base_model)
    if bars is not None:
        paths["relaimpr"] = bars
    sources = f"# {name_a}: {command_line(records_a)}\n# {name_b}: {command_line(records_b)}"
    command = f"ctrbench compare {a} {b}\n{sources}"
    paths["html"] = write_report(
        out,
        records,
        rows,
        notes,
        out / "report.html",
        laid_out,
        paths,
        base_model,
        title=f"ctrbench compare: {name_a} vs {name_b}",
        command=command,
    )
    console = console or Console(width=max(120, Console().width))
    console.print(rich_table(rows, title=f"ctrbench compare: {a} vs {b}", paper=laid_out))
    for note in notes:
        console.print(Text(note, style="yellow"))
    print_written(console, paths.values())
    return rows, paths
