"""Summary rows as ``summary.csv`` / ``summary.md`` / ``summary.tex`` and as a rich console table."""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ctrbench.results.bars import plot_relaimpr
from ctrbench.results.curves import plot_curves
from ctrbench.results.html_report import write_report
from ctrbench.results.paper import TABLES, PaperLayout, PaperRow, layout, paper_key, reference_label
from ctrbench.results.record import read_results
from ctrbench.results.summary import SummaryRow, duplicates, row_labels, strip_row_override, summarize

__all__ = ["paired_notes", "paired_table", "render", "render_notes", "rich_table", "write_tables"]

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
    "ΔAUC (95% CI)",
    "ΔGAUC (95% CI)",
    "p AUC (t, Holm)",
    "p GAUC (t, Holm)",
    "Seeds p<.05",
    "Status",
)
# the paired-comparison columns (:func:`_paired_cells`), printed in a table of their own
PAIRED = HEADERS[HEADERS.index("ΔAUC (95% CI)") : HEADERS.index("Status")]
_FIELDS = [f.name for f in dataclasses.fields(SummaryRow) if f.name != "provenance"]
# With a paper layout (a preset's ``paper`` key): the paper's row and dataset first, its numbers last.
PAPER_HEADERS = ("Paper row", "Paper dataset", *HEADERS, "Paper AUC", "Paper RelaImpr")
PAPER_FIELDS = ["paper_row", "paper_dataset", *_FIELDS, "paper_metric", "paper_auc", "paper_relaimpr"]
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


def _delta(mean: float, low: float, high: float, sep: str, missing: str) -> str:
    """``+0.0123 ± 0.0040``: a mean difference and the half-width of its (symmetric) t interval."""
    if not _finite(mean):
        return missing
    return f"{mean:+.4f}{sep}{(high - low) / 2:.4f}" if _finite(low) and _finite(high) else f"{mean:+.4f}"


def _p(p: float, wins: int, n: int, missing: str) -> str:
    """``0.012 (3/5)``: a Holm-adjusted p-value and the seeds won out of those paired."""
    if not _finite(p):
        return f"n/a ({wins}/{n})" if n else missing
    return f"{'<0.001' if p < 0.001 else f'{p:.3f}'} ({wins}/{n})"


def _worse(n: int) -> str:
    """Significant seeds are counted either way; say how many of them go against the row."""
    return f" ({n} worse)" if n else ""


def _paired_cells(row: SummaryRow, sep: str, missing: str) -> list[str]:
    """The cells of :data:`PAIRED`: ``ref`` for the reference row, ``missing`` where not paired."""
    if row.is_reference:
        return ["ref"] * len(PAIRED)
    if not row.against or row.n_paired == 0:
        return [missing] * len(PAIRED)
    tests = []
    if row.delong_tested:
        tests.append(f"DeLong {row.delong_sig}/{row.delong_tested}" + _worse(row.delong_sig_worse))
    if row.boot_tested:
        tests.append(f"boot {row.boot_sig}/{row.boot_tested}" + _worse(row.boot_sig_worse))
    return [
        _delta(row.d_auc, row.d_auc_low, row.d_auc_high, sep, missing),
        _delta(row.d_gauc, row.d_gauc_low, row.d_gauc_high, sep, missing),
        _p(row.p_auc_holm, row.wins_auc, row.n_paired, missing),
        _p(row.p_gauc_holm, row.wins_gauc, row.n_paired, missing),
        ", ".join(tests) or missing,
    ]


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
        " ".join(filter(None, [row.variant, f"[{row.fingerprint}]" if row.fingerprint else ""])),
        str(row.n_seeds),
        _pm(row.auc_mean, math.nan if single else row.auc_std, sep, missing),
        _pm(row.gauc_mean, math.nan if single else row.gauc_std, sep, missing),
        _pm(row.logloss_mean, math.nan if single else row.logloss_std, sep, missing),
        _pct(row.relaimpr, missing),
        _pct(row.relaimpr_gauc, missing),
        *_paired_cells(row, sep, missing),
        _status(row),
    ]


display_cells = _cells  # the cells of summary.md, for the HTML report


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


def _write_paper_csv(paper: PaperLayout, path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(PAPER_FIELDS)
        for line in paper.rows:
            ours = [_csv_value(getattr(line.summary, name)) for name in _FIELDS]
            numbers = [_csv_value(line.paper_auc), _csv_value(line.paper_relaimpr)]
            writer.writerow([line.label, line.dataset, *ours, paper.table.metric, *numbers])


def _paper_cells(line: PaperRow, sep: str = " ± ", missing: str = "—") -> list[str]:
    """The display cells of one line of a paper layout, in :data:`PAPER_HEADERS` order."""
    cells = _cells(line.summary, sep, missing)
    cells[4] = strip_row_override(cells[4])  # the paper row names the preset's row
    auc = f"{line.paper_auc:.4f}" if _finite(line.paper_auc) else missing
    return [line.label or missing, line.where or missing, *cells, auc, _pct(line.paper_relaimpr, missing)]


def _md_cell(text: str) -> str:
    return text.replace("|", r"\|").replace("\n", " ")


def _md_notes(notes: Sequence[str]) -> str:
    return "".join(f"\n{_md_cell(note)}\n" for note in notes)


def _tex_notes(notes: Sequence[str]) -> str:
    return "".join(f"% {note}\n" for note in (n.replace("\n", " ") for n in notes))


def _markdown(rows: Sequence[SummaryRow], notes: Sequence[str] = ()) -> str:
    align = ["---"] * 5 + ["---:"] * (len(HEADERS) - 6) + ["---"]
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in _cells(row)) + " |" for row in rows]
    return "\n".join(lines) + "\n" + _md_notes(notes)


def _paper_markdown(paper: PaperLayout, notes: Sequence[str] = ()) -> str:
    align = ["---"] * 7 + ["---:"] * (len(HEADERS) - 6) + ["---"] + ["---:"] * 2
    lines = ["| " + " | ".join(PAPER_HEADERS) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in _paper_cells(line)) + " |" for line in paper.rows]
    caption = _md_cell(paper.caption) + (f"\n\n{_md_cell(paper.note)}" if paper.note else "")
    return "\n".join(lines) + "\n\n" + caption + "\n" + _md_notes(notes)


def tex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped."""
    return "".join(_TEX.get(ch, ch) for ch in text)


def _latex(rows: Sequence[SummaryRow], notes: Sequence[str] = ()) -> str:
    lines = [
        r"\begin{tabular}{lllll" + "r" * (len(HEADERS) - 6) + "l}",
        r"\toprule",
        " & ".join(tex_escape(h) for h in HEADERS) + r" \\",
        r"\midrule",
    ]
    for row in rows:
        cells = [tex_escape(c) for c in _cells(row, sep=" \x00 ", missing="--")]
        # the ± placeholder is put in after escaping so its backslash survives
        lines.append(" & ".join(c.replace("\x00", r"$\pm$") for c in cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n" + _tex_notes(notes)


def _paper_latex(paper: PaperLayout, notes: Sequence[str] = ()) -> str:
    lines = [
        "% " + paper.caption + (f"\n% {paper.note}" if paper.note else ""),
        r"\begin{tabular}{lllllll" + "r" * (len(HEADERS) - 6) + "lrr}",
        r"\toprule",
        " & ".join(tex_escape(h) for h in PAPER_HEADERS) + r" \\",
        r"\midrule",
    ]
    for line in paper.rows:
        cells = [tex_escape(c) for c in _paper_cells(line, sep=" \x00 ", missing="--")]
        lines.append(" & ".join(c.replace("\x00", r"$\pm$") for c in cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n" + _tex_notes(notes)


def write_tables(
    rows: Sequence[SummaryRow],
    out_dir: str | os.PathLike[str],
    paper: PaperLayout | None = None,
    notes: Sequence[str] = (),
) -> dict[str, Path]:
    """Write ``summary.csv``, ``summary.md`` and ``summary.tex`` into ``out_dir``; returns their paths.

    With ``paper`` (a :func:`ctrbench.results.paper.layout` of ``rows``) the tables follow the paper's
    layout: its rows in its order with the paper's numbers (``paper_auc``, ``paper_relaimpr``).
    ``notes`` (see :func:`render_notes`) go under the markdown table and into the LaTeX file as
    comments; the CSV holds the rows only.
    """
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {ext: folder / f"summary.{ext}" for ext in ("csv", "md", "tex")}
    if paper is not None:
        _write_paper_csv(paper, paths["csv"])
        paths["md"].write_text(_paper_markdown(paper, notes), encoding="utf-8")
        paths["tex"].write_text(_paper_latex(paper, notes), encoding="utf-8")
        return paths
    _write_csv(rows, paths["csv"])
    paths["md"].write_text(_markdown(rows, notes), encoding="utf-8")
    paths["tex"].write_text(_latex(rows, notes), encoding="utf-8")
    return paths


def rich_table(
    rows: Sequence[SummaryRow], title: str | None = None, paper: PaperLayout | None = None
) -> Table:
    """A print-ready rich table; failed rows in red and partly failed ones in yellow, with their error.

    Dataset/Reg/Act/Variant columns that hold one value for every row move into the caption, to
    keep the table narrow enough for a terminal. With ``paper`` the table follows the paper's layout:
    the paper's rows that were not run are dimmed and left out when finding the shared columns, and
    the paper's dataset column, when shared, moves into the caption too; the written files hold the
    model and logloss columns that the printed table leaves out.
    """
    if paper is None:
        cells = [_cells(row) for row in rows]
        return _rich(HEADERS, cells, [_style(row) for row in rows], title, drop=_paired_columns(0))
    ran = [line.run for line in paper.rows]
    cells = [_paper_cells(line) for line in paper.rows]
    for line, row_cells in zip(paper.rows, cells, strict=True):
        row_cells[0] = line.label or f"({line.summary.model})"  # a row the paper lacks: our model
    # narrower than the files: no Model (the paper's row names it), no Logloss (no paper reports it),
    # no paper RelaImpr when the paper gives none
    drop = {2, 2 + HEADERS.index("Logloss"), *_paired_columns(2)}
    if not any(r.relaimpr for r in paper.table.rows):
        drop.add(len(PAPER_HEADERS) - 1)
    return _rich(
        PAPER_HEADERS,
        cells,
        [_style(line.summary) if line.run else "dim" for line in paper.rows],
        title,
        offset=2,
        judge=ran if any(ran) else None,
        drop=drop,
    )


def _paired_columns(offset: int) -> set[int]:
    """The indices of the :data:`PAIRED` columns, which the main printed table leaves out."""
    first = offset + HEADERS.index(PAIRED[0])
    return set(range(first, first + len(PAIRED)))


def paired_table(rows: Sequence[SummaryRow]) -> Table | None:
    """The printed paired comparison: one line per row that has a reference row (or is one), with the
    :data:`PAIRED` columns of the files; None when no row has a reference. Kept apart from
    :func:`rich_table` so that both fit a terminal."""
    lines = [
        (label, row)
        for label, row in zip(row_labels(rows), rows, strict=True)
        if row.against or row.is_reference
    ]
    if not lines:
        return None
    refs = ", ".join(dict.fromkeys(row.against for _, row in lines if row.against))
    table = Table(
        title=f"Paired with {refs or 'the reference row'}: Δ = row − reference", header_style="bold"
    )
    table.add_column("Row", overflow="fold")
    for header in PAIRED:
        table.add_column(header.replace(" (", "\n("), justify="right", no_wrap=True)
    for label, row in lines:
        table.add_row(Text(label), *(Text(c) for c in _paired_cells(row, " ± ", "—")), style=_style(row))
    return table


def _style(row: SummaryRow) -> str | None:
    return "red" if row.status == "failed" else "yellow" if row.status != "ok" else None


def _rich(
    headers: Sequence[str],
    cells: list[list[str]],
    styles: list[str | None],
    title: str | None,
    offset: int = 0,
    judge: list[bool] | None = None,
    drop: set[int] | frozenset[int] = frozenset(),
) -> Table:
    """The table of :func:`rich_table`.

    ``offset``: columns in front of :data:`HEADERS`' own (the paper's row and dataset); ``judge``: the
    rows whose cells decide which columns are shared (default: all); ``drop``: columns left out.
    """
    judged = [c for c, j in zip(cells, judge or [True] * len(cells), strict=True) if j]
    shared = [i for i in (offset + k for k in (1, 2, 3, 4)) if len({c[i] for c in judged}) == 1]
    if offset and len({c[offset - 1] for c in cells}) == 1:  # the paper's dataset column, over all rows
        shared.insert(0, offset - 1)
    variant = offset + 4
    caption = ", ".join(
        judged[0][i] if i == variant else f"{headers[i].lower()}={judged[0][i]}"
        for i in shared
        if judged[0][i]
    )
    table = Table(title=title, caption=caption or None, header_style="bold")
    keep = [i for i in range(len(headers)) if i not in shared and i not in drop]
    for i in keep:
        header = headers[i].replace(" (", "\n(")
        if headers[i] in ("Variant", "Status"):  # free text folds; names and numbers never wrap
            table.add_column(header, overflow="fold", ratio=1)
        elif i < offset - 1:  # the paper's row label may wrap between words
            table.add_column(header, min_width=16)
        else:
            status = offset + len(HEADERS) - 1
            right = offset + 5 <= i < status or i > status
            table.add_column(header, justify="right" if right else "left", no_wrap=True)
    for row_cells, style in zip(cells, styles, strict=True):
        # Text cells keep brackets in error messages from being read as rich markup.
        table.add_row(*(Text(row_cells[i]) for i in keep), style=style)
    return table


def _job_name(record: Mapping[str, Any], root: Path) -> str:
    """A job's folder, relative to ``root`` where it lies below it."""
    folder = Path(str(record.get("job_dir", "?")))
    try:
        return str(folder.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(folder)


def _listing(records: Sequence[Mapping[str, Any]], shared: set[str], root: Path, limit: int = 5) -> str:
    """``2 (seed=3), 5 (seed=4), ... and 3 more``: job folders with the overrides not in ``shared``."""
    items = []
    for record in records[:limit]:
        overrides = record.get("overrides")
        own = [str(o) for o in overrides if str(o) not in shared] if isinstance(overrides, list) else []
        items.append(_job_name(record, root) + (f" ({' '.join(own)})" if own else ""))
    more = f" and {len(records) - limit} more" if len(records) > limit else ""
    return ", ".join(items) + more


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def render_notes(
    records: Sequence[Mapping[str, Any]],
    rows: Sequence[SummaryRow],
    root: str | os.PathLike[str],
    others: Sequence[Mapping[str, Any]] = (),
    n_boot: int = 1000,
) -> list[str]:
    """The lines under a summary table: jobs of another command left out (``others``), jobs that
    repeat another's config and count once, rows split because their data or code differ, how the
    rows were paired with their reference row (:func:`paired_notes`)."""
    root = Path(root)
    every = [*records, *others]
    sets = [{str(o) for o in r["overrides"]} for r in every if isinstance(r.get("overrides"), list)]
    shared = set.intersection(*sets) if sets else set()
    notes = []
    if others:
        left_out = sorted(others, key=lambda r: _natural_key(_job_name(r, root)))
        verb = "is" if len(others) == 1 else "are"
        notes.append(
            f"{_plural(len(others), 'job', 'jobs')} in this folder {verb} from another command, left out "
            f"of the table: {_listing(left_out, shared, root)}."
        )
    repeated = duplicates(records)
    if repeated:
        pairs = [
            f"{_listing([dropped], shared, root)} as {_job_name(kept, root)}"
            for dropped, kept in repeated[:5]
        ]
        more = f" and {len(repeated) - 5} more" if len(repeated) > 5 else ""
        notes.append(
            f"{_plural(len(repeated), 'job repeats', 'jobs repeat')} the config of another, counted once: "
            + ", ".join(pairs)
            + more
            + "."
        )
    if any(row.fingerprint for row in rows):
        notes.append(
            "Records of different data or code (their fingerprint) are different rows, marked in [brackets]; "
            "RelaImpr compares rows of the same data and code only."
        )
    return notes + paired_notes(rows, n_boot)


def paired_notes(rows: Sequence[SummaryRow], n_boot: int = 1000) -> list[str]:
    """What the paired columns mean (the correction and the per-seed tests) and, per row, why it was
    not paired with its reference row or not tested on every seed."""
    labels = row_labels(rows)
    compared = [r for r in rows if r.against and r.n_paired]
    notes = []
    if compared:
        refs = ", ".join(dict.fromkeys(r.against for r in compared))
        n_rows = _plural(len(compared), "row", "rows")
        notes.append(
            f"Δ = row − reference ({refs}) over the seeds both ran, matched by seed value; 95% CI: "
            f"t interval over seeds; p: paired t-test, Holm-adjusted over {n_rows} "
            f"compared against {refs} (AUC and GAUC separately), with seeds won; per-seed tests on the "
            f"test predictions: DeLong (AUC), paired bootstrap over users, {n_boot} resamples (GAUC), "
            "counted at p < 0.05."
        )
    same: dict[tuple[str, str], list[str]] = {}  # one line per (reference, reason): Optuna trials are many
    for row, label in zip(rows, labels, strict=True):
        if row.pair_note:
            same.setdefault((row.against, row.pair_note), []).append(label)
    for (against, note), names in same.items():
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        notes.append(f"{shown} vs {against}: {note}.")
    return notes


def _natural_key(text: str) -> list[Any]:
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", text)]


def print_written(console: Console, paths: Iterable[str | os.PathLike[str]]) -> None:
    """``wrote:`` and one absolute path a line, never folded by rich (whole, to copy, at any width)."""
    console.print(Text("wrote:", style="dim"))
    for path in paths:
        console.print(Text(f"  {Path(path).resolve()}", style="dim"), soft_wrap=True)


def render(
    root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    console: Console | None = None,
    base_model: str = "base",
    paper: str | None = None,
    jobs: Collection[str | os.PathLike[str]] | None = None,
    not_run: Sequence[str] = (),
    warn: Callable[[str], None] | None = None,
    against: str | None = None,
    n_boot: int = 1000,
) -> list[SummaryRow]:
    """Read every ``result.json`` under ``root``, summarize, write the tables and print them.

    The three ``summary.*`` files go to ``out_dir`` (default: ``root``). Raises ``ValueError``
    when ``root`` holds no ``result.json``. ``paper`` (a table id of :mod:`ctrbench.results.paper`;
    default: the ``paper`` key of the records' configs, which a preset sets; ``"none"``: off) lays
    the tables out like that table of the paper; an unknown id is reported and ignored.

    ``jobs``: the job folders of the command the summary describes (a sweep's, see
    :class:`~ctrbench.results.callback.SummaryCallback`); records in other folders under ``root`` are
    left out of the tables and plots and listed in a note under the table. None (``ctrbench report``):
    every record. Either way a configuration run twice counts once, and records of different data or
    code are separate rows (:func:`~ctrbench.results.summary.summarize`). ``not_run``: the jobs of an
    interrupted sweep that never started (their overrides), listed in a note. ``warn``: receives the
    one-line warning for each ``result.json`` skipped as unreadable or not a record (default: a
    ``RuntimeWarning``). ``against`` (a row label or model name; default: the RelaImpr base row) and
    ``n_boot`` (bootstrap resamples) set the paired comparison (:func:`~ctrbench.results.summary.compare`);
    an ``against`` naming no row raises ``ValueError``. A summary file that cannot be written (a
    read-only folder) raises ``OSError``.
    """
    records = read_results(root, warn)
    if not records:
        raise ValueError(f"no result.json found under {root}")
    others: list[dict[str, Any]] = []
    if jobs is not None:
        mine = {Path(j).resolve() for j in jobs}
        others = [r for r in records if Path(r["job_dir"]).resolve() not in mine]
        records = [r for r in records if Path(r["job_dir"]).resolve() in mine]
        if not records:
            raise ValueError(f"none of this command's {len(mine)} jobs left a result.json under {root}")
    table_id = paper_key(records) if paper is None else paper
    if against is None and table_id in TABLES:  # the paired tests compare with the paper's reference row
        against = reference_label(table_id, records)
    rows = summarize(records, base_model=base_model, against=against, n_boot=n_boot)
    notes = render_notes(records, rows, root, others, n_boot=n_boot)
    if not_run:  # an interrupted sweep: the command's jobs that never started
        shown = "; ".join(not_run[:10]) + (f" and {len(not_run) - 10} more" if len(not_run) > 10 else "")
        notes.append(f"Interrupted before {_plural(len(not_run), 'job', 'jobs')} started: {shown}.")
    console = console or Console(width=max(120, Console().width))
    laid_out = None
    if table_id and table_id != "none":
        if table_id in TABLES:
            laid_out = layout(table_id, records, rows)
        else:
            known = ", ".join(TABLES)
            console.print(
                Text(f"unknown paper table {table_id!r} (known: {known}): plain layout", style="yellow")
            )
    paths = write_tables(rows, root if out_dir is None else out_dir, paper=laid_out, notes=notes)
    curves = plot_curves(records, Path(root if out_dir is None else out_dir) / "curves.png")
    if curves is not None:
        paths["curves"] = curves
    bars = plot_relaimpr(records, Path(root if out_dir is None else out_dir) / "relaimpr.png", base_model)
    if bars is not None:
        paths["relaimpr"] = bars
    paths["html"] = write_report(
        root, records, rows, notes, paths["md"].with_name("report.html"), laid_out, paths, base_model
    )
    # paths are absolute wherever they are printed (a single run's folder is, a sweep's is not)
    title = f"ctrbench summary: {Path(root).resolve()}" + (f"\n{laid_out.table.title}" if laid_out else "")
    console.print(rich_table(rows, title=title, paper=laid_out))
    paired = paired_table(rows)
    if paired is not None:
        console.print(paired)
    if laid_out is not None:
        console.print(Text(laid_out.caption, style="dim"))
        if laid_out.note:
            console.print(Text(laid_out.note, style="yellow"))
    for note in notes:
        console.print(Text(note, style="yellow"))
    print_written(console, paths.values())
    return rows
