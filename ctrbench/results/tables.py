"""Summary rows as ``summary.csv`` / ``summary.md`` / ``summary.tex`` and as a rich console table."""

from __future__ import annotations

import csv
import dataclasses
import math
import os
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ctrbench.results.curves import plot_curves
from ctrbench.results.record import read_results
from ctrbench.results.summary import SummaryRow, summarize

__all__ = ["render", "rich_table", "write_tables"]

HEADERS = (
    "Model",
    "Dataset",
    "Reg",
    "Act",
    "Variant",
    "Seeds",
    "AUC",
    "GAUC",
    "Logloss",
    "RelaImpr (AUC)",
    "RelaImpr (GAUC)",
    "Status",
)
_FIELDS = [f.name for f in dataclasses.fields(SummaryRow)]
# LaTeX specials → escapes, applied one character at a time (so no escape is escaped again).
_TEX = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def _finite(value: float) -> bool:
    return value is not None and math.isfinite(value)


def _pm(mean: float, std: float, sep: str, missing: str) -> str:
    if not _finite(mean):
        return missing
    return f"{mean:.4f}{sep}{std:.4f}" if _finite(std) else f"{mean:.4f}"


def _pct(value: float, missing: str) -> str:
    return f"{value:+.2f}%" if _finite(value) else missing


def _status(row: SummaryRow) -> str:
    return f"{row.status}: {row.error}" if row.error and row.status != "ok" else row.status


def _cells(row: SummaryRow, sep: str = " ± ", missing: str = "—") -> list[str]:
    """The display cells of one row, in :data:`HEADERS` order."""
    single = row.n_seeds < 2  # a lone seed shows its value without "± 0.0000"
    return [
        row.model,
        row.dataset,
        row.reg,
        row.act,
        row.variant,
        str(row.n_seeds),
        _pm(row.auc_mean, math.nan if single else row.auc_std, sep, missing),
        _pm(row.gauc_mean, math.nan if single else row.gauc_std, sep, missing),
        _pm(row.logloss_mean, math.nan if single else row.logloss_std, sep, missing),
        _pct(row.relaimpr, missing),
        _pct(row.relaimpr_gauc, missing),
        _status(row),
    ]


def _csv_value(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ""  # repr: shortest exact round-trip
    return str(value)


def _write_csv(rows: Sequence[SummaryRow], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(_FIELDS)
        for row in rows:
            writer.writerow([_csv_value(getattr(row, name)) for name in _FIELDS])


def _md_cell(text: str) -> str:
    return text.replace("|", r"\|").replace("\n", " ")


def _markdown(rows: Sequence[SummaryRow]) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "|".join(["---"] * 5 + ["---:"] * 6 + ["---"]) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in _cells(row)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def tex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped."""
    return "".join(_TEX.get(ch, ch) for ch in text)


def _latex(rows: Sequence[SummaryRow]) -> str:
    lines = [
        r"\begin{tabular}{lllll" + "r" * 6 + "l}",
        r"\toprule",
        " & ".join(tex_escape(h) for h in HEADERS) + r" \\",
        r"\midrule",
    ]
    for row in rows:
        cells = [tex_escape(c) for c in _cells(row, sep=" \x00 ", missing="--")]
        # the ± placeholder is put in after escaping so its backslash survives
        lines.append(" & ".join(c.replace("\x00", r"$\pm$") for c in cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def write_tables(rows: Sequence[SummaryRow], out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``summary.csv``, ``summary.md`` and ``summary.tex`` into ``out_dir``; returns their paths."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {ext: folder / f"summary.{ext}" for ext in ("csv", "md", "tex")}
    _write_csv(rows, paths["csv"])
    paths["md"].write_text(_markdown(rows), encoding="utf-8")
    paths["tex"].write_text(_latex(rows), encoding="utf-8")
    return paths


def rich_table(rows: Sequence[SummaryRow], title: str | None = None) -> Table:
    """A print-ready rich table; failed rows in red and partly failed ones in yellow, with their error.

    Dataset/Reg/Act/Variant columns that hold one value for every row move into the caption, to
    keep the table narrow enough for a terminal.
    """
    cells = [_cells(row) for row in rows]
    shared = [i for i in (1, 2, 3, 4) if len({c[i] for c in cells}) == 1]
    caption = ", ".join(
        cells[0][i] if i == 4 else f"{HEADERS[i].lower()}={cells[0][i]}" for i in shared if cells[0][i]
    )
    table = Table(title=title, caption=caption or None, header_style="bold")
    keep = [i for i in range(len(HEADERS)) if i not in shared]
    for i in keep:
        header = HEADERS[i].replace(" (", "\n(")
        if HEADERS[i] in ("Variant", "Status"):  # free text folds; names and numbers never wrap
            table.add_column(header, overflow="fold", ratio=1)
        else:
            table.add_column(header, justify="right" if 5 <= i <= 10 else "left", no_wrap=True)
    for row, row_cells in zip(rows, cells, strict=True):
        style = "red" if row.status == "failed" else "yellow" if row.status != "ok" else None
        # Text cells keep brackets in error messages from being read as rich markup.
        table.add_row(*(Text(row_cells[i]) for i in keep), style=style)
    return table


def render(
    root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    console: Console | None = None,
    base_model: str = "base",
) -> list[SummaryRow]:
    """Read every ``result.json`` under ``root``, summarize, write the tables and print them.

    The three ``summary.*`` files go to ``out_dir`` (default: ``root``). Raises ``ValueError``
    when ``root`` holds no ``result.json``.
    """
    records = read_results(root)
    if not records:
        raise ValueError(f"no result.json found under {root}")
    rows = summarize(records, base_model=base_model)
    paths = write_tables(rows, root if out_dir is None else out_dir)
    curves = plot_curves(records, Path(root if out_dir is None else out_dir) / "curves.png")
    if curves is not None:
        paths["curves"] = curves
    console = console or Console(width=max(120, Console().width))
    console.print(rich_table(rows, title=f"ctrbench summary: {root}"))
    console.print(Text(f"wrote {', '.join(str(p) for p in paths.values())}", style="dim"))
    return rows
