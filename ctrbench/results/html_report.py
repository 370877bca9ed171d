"""``report.html``: one self-contained page for a sweep (inline CSS and JS, images as ``data:`` URIs).

The page can be mailed or archived on its own: it loads nothing from the network or the disk. It holds
the command and provenance of the runs, the summary table (every column of
:class:`~ctrbench.results.summary.SummaryRow`, sortable by a click on a header), the paper's numbers
beside ours when the sweep follows a paper's table, the learning curves and RelaImpr chart, the jobs
that failed or were interrupted, and what sets each row's configuration apart from the reference row's.
Every value comes from files and is escaped.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import math
import os
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ctrbench.results.paper import PaperLayout
from ctrbench.results.summary import SummaryRow, group_records, row_labels

__all__ = ["REPORT_FILE", "command_line", "config_diff", "flatten", "write_report"]

REPORT_FILE = "report.html"
_HIDDEN = {"provenance"}  # a SummaryRow's raw fingerprint tuple: shown under Provenance instead
_IMAGE_TITLES = {"curves": "Learning curves", "relaimpr": "RelaImpr"}
_MISSING = "—"

_CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5em 2em;color:#222}
h1{font-size:1.5em;margin:0 0 .2em}h2{font-size:1.15em;margin:1.6em 0 .5em;border-bottom:1px solid #ddd}
code,pre,.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12.5px}
pre{background:#f6f8fa;padding:.6em .8em;overflow-x:auto;white-space:pre-wrap;word-break:break-all}
table{border-collapse:collapse;margin:.4em 0}th,td{border:1px solid #ddd;padding:3px 7px;vertical-align:top}
th{background:#f0f3f6;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}#display{font-size:13px}
table.sortable th{cursor:pointer;user-select:none;white-space:nowrap}
table.sortable th[data-dir=asc]::after{content:" \\25B2"}
table.sortable th[data-dir=desc]::after{content:" \\25BC"}
tr.failed td{background:#fde8e8}tr.partial td{background:#fff6dc}tr.notrun td{color:#999}
.muted{color:#666}.notes li{color:#8a6100}img{max-width:100%;border:1px solid #eee}
.scroll{overflow-x:auto}dl{display:grid;grid-template-columns:max-content auto;gap:2px 14px;margin:.3em 0}
dt{font-weight:600}dd{margin:0}
"""

# Click a header to sort by it (numbers as numbers, empty cells last); ``#sort=COL`` or ``#sort=-COL``
# in the address sorts on load.
_JS = """
(function(){
function key(td){var v=td.getAttribute('data-sort');return v===null?td.textContent:v;}
function sortTable(table,col,dir){
  var ths=table.tHead.rows[0].cells,idx=-1;
  for(var i=0;i<ths.length;i++){
    ths[i].removeAttribute('data-dir');if(ths[i].getAttribute('data-col')===col)idx=i;
  }
  if(idx<0)return false;
  var body=table.tBodies[0],rows=Array.prototype.slice.call(body.rows);
  var vals=rows.map(function(r){return key(r.cells[idx]);});
  var numeric=vals.every(function(v){return v===''||!isNaN(Number(v));});
  var order=rows.map(function(r,i){return i;});
  order.sort(function(a,b){
    var x=vals[a],y=vals[b];
    if(x===''||y==='')return (x==='')-(y==='')||a-b;
    var c=numeric?Number(x)-Number(y):x.localeCompare(y);
    return (dir==='desc'?-c:c)||a-b;
  });
  order.forEach(function(i){body.appendChild(rows[i]);});
  ths[idx].setAttribute('data-dir',dir);table.setAttribute('data-sorted',(dir==='desc'?'-':'')+col);
  return true;
}
var tables=document.querySelectorAll('table.sortable');
Array.prototype.forEach.call(tables,function(t){
  Array.prototype.forEach.call(t.tHead.rows[0].cells,function(th){
    th.addEventListener('click',function(){
      sortTable(t,th.getAttribute('data-col'),th.getAttribute('data-dir')==='asc'?'desc':'asc');
    });
  });
});
window.addEventListener('load',function(){  // decoded images are marked (a check for tests)
  Array.prototype.forEach.call(document.images,function(i){if(i.naturalWidth>0)i.setAttribute('data-ok','1');});
});
var m=/sort=(-?)([^&]+)/.exec(location.hash||'');
if(m)Array.prototype.forEach.call(tables,function(t){sortTable(t,decodeURIComponent(m[2]),m[1]?'desc':'asc');});
})();
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _is_float(value: object) -> bool:
    return isinstance(value, float) or (isinstance(value, int) and not isinstance(value, bool))


def _fmt_number(value: float | int) -> str:
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return _MISSING
    if value != 0 and abs(value) < 1e-3:
        return f"{value:.3g}"  # p-values and other small numbers keep their digits
    return f"{value:.4f}"


def _fmt(value: Any) -> str:
    """A value as a cell shows it: numbers to 4 decimals, containers as compact JSON, None as a dash."""
    if value is None or value == "":
        return _MISSING if value is None else ""
    if isinstance(value, bool):
        return str(value).lower()
    if _is_float(value):
        return _fmt_number(value)
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


def _cell(value: Any, percent: bool = False) -> str:
    """One ``<td>``: numbers right-aligned with their exact value in ``data-sort`` (empty for NaN/None);
    ``percent``: a value in % (RelaImpr) shown as ``+1.23%``."""
    if _is_float(value) and not isinstance(value, bool):
        sort = repr(value) if math.isfinite(value) else ""
        shown = f"{value:+.2f}%" if percent and sort else _fmt(value)
        return f'<td class="num" data-sort="{_e(sort)}">{_e(shown)}</td>'
    if value is None:
        return f'<td data-sort="">{_MISSING}</td>'
    return f"<td>{_e(_fmt(value))}</td>"


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level of dotted keys: ``{"optim": {"lr": 1e-3}}`` → ``{"optim.lr": 1e-3}``."""
    if not isinstance(value, Mapping):
        return {prefix: value} if prefix else {}
    out: dict[str, Any] = {}
    for key, item in value.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(item, Mapping) and item:
            out.update(flatten(item, name))
        else:
            out[name] = item
    return out


def config_diff(reference: Any, other: Any, ignore: Sequence[str] = ("seed",)) -> list[tuple[str, Any, Any]]:
    """``(key, reference value, other value)`` for every dotted config key whose value differs (a key
    one side lacks has the value ``None`` there), sorted by key; ``ignore``: keys left out (the seed,
    which a row aggregates over)."""
    a, b = flatten(reference), flatten(other)
    missing = object()
    diffs = []
    for key in sorted(set(a) | set(b)):
        if key in ignore:
            continue
        x, y = a.get(key, missing), b.get(key, missing)
        if x != y:
            diffs.append((key, None if x is missing else x, None if y is missing else y))
    return diffs


def command_line(records: Sequence[Mapping[str, Any]]) -> str:
    """The command the jobs recorded (``provenance.command``) when they all ran from one; else the
    sweep's command as its jobs' overrides spell it: each key once, with its values in order
    (``ctrbench -m model=lr,base seed=1,2``); a single job without ``-m``."""
    typed = {str((r.get("provenance") or {}).get("command") or "") for r in records}
    if len(typed) == 1 and (only := typed.pop()):
        return only
    values: dict[str, list[str]] = {}
    for record in records:
        overrides = record.get("overrides")
        for override in overrides if isinstance(overrides, list) else ():
            key, _, value = str(override).partition("=")
            seen = values.setdefault(key, [])
            if value not in seen:
                seen.append(value)
    parts = [f"{key}={','.join(vals)}" if vals != [""] else key for key, vals in values.items()]
    return " ".join(["ctrbench", *(["-m"] if len(records) > 1 else []), *parts])


def _distinct(records: Sequence[Mapping[str, Any]], get) -> list[tuple[str, int]]:
    """Distinct values of ``get(record)`` (as compact JSON) with how many records carry each."""
    counts: dict[str, int] = {}
    for record in records:
        value = get(record)
        if value is None:
            continue
        text = value if isinstance(value, str) else _fmt(value)
        counts[text] = counts.get(text, 0) + 1
    return list(counts.items())


def _provenance(records: Sequence[Mapping[str, Any]]) -> str:
    """Key → value(s) over the records: fingerprint (data, code, device), plugins, and every key of
    each record's ``provenance`` mapping; a key whose records disagree lists each value with its count."""
    items: list[tuple[str, Any]] = []

    def fp(part: str):
        return lambda r: (
            r.get("fingerprint", {}).get(part) if isinstance(r.get("fingerprint"), Mapping) else None
        )

    items += [(f"fingerprint.{part}", fp(part)) for part in ("data", "code", "device")]
    plugin_kinds: list[str] = []
    for record in records:
        plugins = record.get("plugins")
        for kind in plugins if isinstance(plugins, Mapping) else ():
            if kind not in plugin_kinds:
                plugin_kinds.append(str(kind))
    for kind in plugin_kinds:

        def plugin(r, kind=kind):
            p = r.get("plugins")
            info = p.get(kind) if isinstance(p, Mapping) else None
            if isinstance(info, Mapping):
                return " ".join(str(info.get(k, "")) for k in ("name", "dist", "version") if info.get(k))
            return info

        items.append((f"plugins.{kind}", plugin))
    prov_keys: list[str] = []
    for record in records:
        prov = record.get("provenance")
        for key in flatten(prov) if isinstance(prov, Mapping) else ():
            if key not in prov_keys:
                prov_keys.append(key)
    for key in prov_keys:
        items.append(
            (
                f"provenance.{key}",
                lambda r, key=key: (
                    flatten(r["provenance"]).get(key) if isinstance(r.get("provenance"), Mapping) else None
                ),
            )
        )
    lines = []
    for name, get in items:
        values = _distinct(records, get)
        if not values:
            continue
        if len(values) == 1:
            shown = f"<code>{_e(values[0][0])}</code>"
        else:
            shown = "<br>".join(
                f"<code>{_e(v)}</code> <span class=muted>({n} jobs)</span>" for v, n in values
            )
        lines.append(f"<dt>{_e(name)}</dt><dd>{shown}</dd>")
    return "<dl>" + "".join(lines) + "</dl>" if lines else "<p class=muted>No provenance recorded.</p>"


def _row_class(status: str) -> str:
    if status == "ok":
        return ""
    if status == "not run":
        return ' class="notrun"'
    return ' class="partial"' if status.startswith("partial") else ' class="failed"'


def _summary_table(rows: Sequence[SummaryRow], labels: Sequence[str]) -> str:
    """Every field of the rows (new SummaryRow fields included), one sortable table."""
    dicts = [{k: v for k, v in dataclasses.asdict(row).items() if k not in _HIDDEN} for row in rows]
    columns: list[str] = []
    for d in dicts:
        columns += [k for k in d if k not in columns]
    head = '<th data-col="row">row</th>' + "".join(f'<th data-col="{_e(c)}">{_e(c)}</th>' for c in columns)
    body = []
    for label, row, d in zip(labels, rows, dicts, strict=True):
        cells = f'<td data-sort="{_e(label)}">{_e(label)}</td>' + "".join(
            _cell(d.get(c), c.startswith("relaimpr")) for c in columns
        )
        body.append(f'<tr{_row_class(row.status)} data-row="{_e(label)}">{cells}</tr>')
    return (
        '<div class="scroll"><table id="summary" class="sortable"><thead><tr>'
        + head
        + "</tr></thead><tbody>"
        + "".join(body)
        + "</tbody></table></div>"
    )


_LEADING_NUMBER = re.compile(r"^[<>]?\s*([+-]?\d+(?:\.\d+)?(?:e[+-]?\d+)?)", re.IGNORECASE)


_SHARED = ("Dataset", "Reg", "Act", "Variant")  # shown once above the table when every row agrees


def _display_table(rows: Sequence[SummaryRow], labels: Sequence[str]) -> str:
    """The table as ``summary.md`` shows it (mean ± std, RelaImpr, the paired columns), sortable: a
    cell's sort key is its leading number (``0.6972 ± 0.0034`` → 0.6972), else its text. Columns of
    :data:`_SHARED` with one value in every row are said once, above the table."""
    from ctrbench.results.tables import HEADERS, display_cells  # tables imports this module

    cells = [display_cells(row) for row in rows]
    shared = [
        i for i, h in enumerate(HEADERS) if h in _SHARED and len(rows) > 1 and len({c[i] for c in cells}) == 1
    ]
    keep = [i for i in range(len(HEADERS)) if i not in shared]
    caption = ", ".join(f"{HEADERS[i].lower()}: {cells[0][i]}" for i in shared if cells[0][i])
    head = "".join(f'<th data-col="{_e(HEADERS[i])}">{_e(HEADERS[i])}</th>' for i in keep)
    body = []
    for label, row, texts in zip(labels, rows, cells, strict=True):
        tds = []
        for i in keep:
            number = _LEADING_NUMBER.match(texts[i])
            cls = ' class="num"' if number else ""
            tds.append(
                f'<td{cls} data-sort="{_e(number.group(1) if number else texts[i])}">{_e(texts[i])}</td>'
            )
        body.append(f'<tr{_row_class(row.status)} data-row="{_e(label)}">{"".join(tds)}</tr>')
    return (
        (f'<p class="muted" id="shared">Every row: {_e(caption)}</p>' if caption else "")
        + '<div class="scroll"><table id="display" class="sortable"><thead><tr>'
        + head
        + "</tr></thead><tbody>"
        + "".join(body)
        + "</tbody></table></div>"
    )


def _paper_table(paper: PaperLayout) -> str:
    """The paper's rows beside ours: our mean ± std of the metric the paper's AUC is, and RelaImpr."""
    metric = paper.table.metric
    head = ["Paper row", "Paper dataset", "Our model", f"Our {metric.upper()}", "Paper AUC"]
    head += ["Our RelaImpr", "Paper RelaImpr", "Status"]
    cols = ["paper_row", "paper_dataset", "model", f"our_{metric}", "paper_auc"]
    cols += ["our_relaimpr", "paper_relaimpr", "status"]
    body = []
    for line in paper.rows:
        row = line.summary
        mean, std = getattr(row, f"{metric}_mean"), getattr(row, f"{metric}_std")
        ours = _fmt(mean) if row.n_seeds < 2 or not math.isfinite(std) else f"{_fmt(mean)} ± {_fmt(std)}"
        ours_sort = repr(mean) if math.isfinite(mean) else ""
        relaimpr = row.relaimpr_gauc if metric == "gauc" else row.relaimpr

        def pct(x: float) -> tuple[str, str]:
            return (f"{x:+.2f}%", repr(x)) if math.isfinite(x) else (_MISSING, "")

        paper_auc = _fmt(line.paper_auc) if math.isfinite(line.paper_auc) else _MISSING
        cells = [
            _e(line.label or _MISSING),
            _e(line.where or _MISSING),
            _e(row.model),
            f'<span data-sort="{ours_sort}">{_e(ours)}</span>',
            paper_auc,
            pct(relaimpr)[0],
            pct(line.paper_relaimpr)[0],
            _e(row.status),
        ]
        sorts = [None, None, None, ours_sort, repr(line.paper_auc) if paper_auc != _MISSING else ""]
        sorts += [pct(relaimpr)[1], pct(line.paper_relaimpr)[1], None]
        tds = "".join(
            f"<td>{c}</td>" if s is None else f'<td class="num" data-sort="{_e(s)}">{c}</td>'
            for c, s in zip(cells, sorts, strict=True)
        )
        body.append(f"<tr{_row_class(row.status)}>{tds}</tr>")
    ths = "".join(f'<th data-col="{_e(c)}">{_e(h)}</th>' for c, h in zip(cols, head, strict=True))
    return (
        f"<p>{_e(paper.caption)}</p>"
        + (f"<p>{_e(paper.note)}</p>" if paper.note else "")
        + f'<div class="scroll"><table id="paper" class="sortable"><thead><tr>{ths}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _job_name(record: Mapping[str, Any], root: Path) -> str:
    folder = Path(str(record.get("job_dir", "?")))
    try:
        return str(folder.resolve().relative_to(root.resolve()))
    except (ValueError, OSError):
        return str(folder)


def _failures(records: Sequence[Mapping[str, Any]], root: Path) -> str:
    bad = [r for r in records if r.get("status") != "ok"]
    if not bad:
        return "<p class=muted>Every job finished.</p>"
    lines = []
    for record in bad:
        status = "interrupted" if record.get("status") == "running" else str(record.get("status"))
        error = str(record.get("error") or "ended while running (killed, or its process died)")
        error = error.strip().splitlines()[0] if error.strip() else error
        overrides = record.get("overrides")
        shown = " ".join(str(o) for o in overrides) if isinstance(overrides, list) else ""
        lines.append(
            f"<tr><td class=mono>{_e(_job_name(record, root))}</td><td class=mono>{_e(shown)}</td>"
            f"<td>{_e(status)}</td><td>{_e(error)}</td></tr>"
        )
    return (
        '<table id="failures"><thead><tr><th>Job</th><th>Overrides</th><th>Status</th><th>Error</th></tr>'
        "</thead><tbody>" + "".join(lines) + "</tbody></table>"
    )


def _group_for(row: SummaryRow, groups: Sequence[Sequence[Mapping[str, Any]]], rows_of_groups) -> Any:
    for members, candidate in zip(groups, rows_of_groups, strict=True):
        if (candidate.model, candidate.dataset, candidate.reg, candidate.act, candidate.variant) == (
            row.model,
            row.dataset,
            row.reg,
            row.act,
            row.variant,
        ) and candidate.provenance == row.provenance:
            return members
    return None


def _config_diffs(
    records: Sequence[Mapping[str, Any]], rows: Sequence[SummaryRow], labels: Sequence[str], base_model: str
) -> str:
    """Per row, the flattened config keys whose values differ from the reference row's config (the
    first ``base_model`` row, else the first row)."""
    from ctrbench.results.summary import summary_row

    groups = group_records(records)
    group_rows = [summary_row(g) for g in groups]
    configs = []
    for row in rows:
        members = _group_for(row, groups, group_rows)
        config = members[0].get("config") if members else None
        configs.append(config if isinstance(config, Mapping) else None)
    ref = next((i for i, r in enumerate(rows) if r.model == base_model and configs[i] is not None), None)
    ref = ref if ref is not None else next((i for i, c in enumerate(configs) if c is not None), None)
    if ref is None:
        return "<p class=muted>The records hold no config.</p>"
    out = [f"<p>Reference row: <b>{_e(labels[ref])}</b>. Seeds are left out (a row spans its seeds).</p>"]
    out.append('<table id="config-diff"><thead><tr><th>Row</th><th>Key</th>')
    out.append(f"<th>{_e(labels[ref])}</th><th>This row</th></tr></thead><tbody>")
    for i, (label, config) in enumerate(zip(labels, configs, strict=True)):
        if i == ref:
            continue
        if config is None:
            out.append(f'<tr><td>{_e(label)}</td><td colspan="3" class=muted>no config recorded</td></tr>')
            continue
        diffs = config_diff(configs[ref], config)
        if not diffs:
            out.append(f'<tr><td>{_e(label)}</td><td colspan="3" class=muted>same config</td></tr>')
        for j, (key, a, b) in enumerate(diffs):
            first = f'<td rowspan="{len(diffs)}">{_e(label)}</td>' if j == 0 else ""
            out.append(
                f"<tr>{first}<td class=mono>{_e(key)}</td><td class=mono>{_e(_fmt(a))}</td>"
                f"<td class=mono>{_e(_fmt(b))}</td></tr>"
            )
    out.append("</tbody></table>")
    return "".join(out)


def _images(images: Mapping[str, Any] | None, folder: Path) -> str:
    """Each PNG inlined as a ``data:`` URI (nothing is linked)."""
    if images is None:
        images = {name: folder / f"{name}.png" for name in _IMAGE_TITLES}
    parts = []
    for name, path in images.items():
        path = Path(path)
        if path.suffix.lower() != ".png" or not path.is_file():
            continue
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        title = _IMAGE_TITLES.get(name, name)
        parts.append(
            f'<figure id="fig-{_e(name)}"><figcaption>{_e(title)}</figcaption>'
            f'<img alt="{_e(title)}" src="data:image/png;base64,{data}"></figure>'
        )
    return "".join(parts) or "<p class=muted>No charts (no epoch history, or no base row).</p>"


def write_report(
    root: str | os.PathLike[str],
    records: Sequence[Mapping[str, Any]],
    rows: Sequence[SummaryRow],
    notes: Sequence[str],
    out_path: str | os.PathLike[str],
    paper_layout: PaperLayout | None = None,
    images: Mapping[str, Any] | None = None,
    base_model: str = "base",
    title: str | None = None,
    command: str | None = None,
) -> Path:
    """Write the self-contained HTML report of ``rows`` (a summary of ``records``) to ``out_path``.

    ``images``: name → file; the PNGs among them (``curves``, ``relaimpr``) are inlined (default:
    ``curves.png`` and ``relaimpr.png`` beside ``out_path`` when present). ``command``: the command
    shown on top (default: rebuilt from the records' overrides). Returns ``out_path``.
    """
    root, out = Path(root), Path(out_path)
    labels = row_labels(rows) if rows else []
    heading = title or f"ctrbench report: {root}"
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    shown_command = command or command_line(records)
    notes_html = "".join(f"<li>{_e(n)}</li>" for n in notes)
    sections = [
        f"<h1>{_e(heading)}</h1><p class=muted>{len(records)} jobs, {len(rows)} rows; written {_e(when)}</p>",
        f"<h2>Command</h2><pre id=command>{_e(shown_command)}</pre>",
        "<h2>Summary</h2><p class=muted>Click a column header to sort; metrics are test metrics of the epoch "
        "selected on validation, mean ± std over seeds; Δ, p and per-seed tests against the reference row "
        "(see the note).</p>" + _display_table(rows, labels),
        "<details><summary>Every column, as in summary.csv</summary>"
        + _summary_table(rows, labels)
        + "</details>",
    ]
    if notes:
        sections.append(f'<ul class="notes">{notes_html}</ul>')
    if paper_layout is not None:
        sections.append("<h2>Paper vs ours</h2>" + _paper_table(paper_layout))
    sections.append('<h2>Charts</h2><div id="charts">' + _images(images, out.parent) + "</div>")
    sections.append("<h2>Failed and interrupted jobs</h2>" + _failures(records, root))
    sections.append(f'<h2>Provenance</h2><div id="provenance">{_provenance(records)}</div>')
    sections.append("<h2>Configuration differences</h2>" + _config_diffs(records, rows, labels, base_model))
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(heading)}</title><style>{_CSS}</style></head><body>"
        + "\n".join(sections)
        + f"<script>{_JS}</script></body></html>\n"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, out)
    return out
