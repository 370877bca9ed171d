"""report.html: self-contained, escaped, generic over SummaryRow's columns; rendered in headless Chromium."""

from __future__ import annotations

import csv
import dataclasses
import math
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from ctrbench.results.html_report import command_line, config_diff, flatten, write_report
from ctrbench.results.summary import SummaryRow, summarize

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium not installed (Debian: apt-get install chromium)"
)


class _Page(HTMLParser):
    """Tags with their attributes, in document order, and the text of each <tr data-row>."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.styles: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.styles.append(data)

    def find(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for t, attrs in self.tags if t == tag]

    def rows(self, table_id: str) -> list[str]:
        """``data-row`` of the rows of the table ``table_id``, in order."""
        out, inside = [], False
        for tag, attrs in self.tags:
            if tag == "table":
                inside = attrs.get("id") == table_id
            elif inside and tag == "tr" and attrs.get("data-row") is not None:
                out.append(attrs["data-row"])
        return out


def _parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    return page


def _assert_self_contained(text: str) -> None:
    """Nothing outside the file: every src/href is a data: URI or an in-page anchor; no CSS imports."""
    page = _parse(text)
    for tag, attrs in page.tags:
        for name in ("src", "href", "srcset", "action", "data", "poster"):
            value = attrs.get(name)
            if value is not None:
                assert value.startswith(("data:", "#")), f"<{tag} {name}={value[:60]!r}> leaves the file"
    assert not page.find("link") and not page.find("iframe") and not page.find("object")
    assert all(s.get("src") is None for s in page.find("script"))
    css = "".join(page.styles)
    assert "url(" not in css and "@import" not in css


def _row(model: str, **kw) -> SummaryRow:
    values = dict(
        model=model,
        dataset="synthetic",
        reg="none",
        act="prelu",
        variant="",
        n_seeds=2,
        n_failed=0,
        auc_mean=0.6,
        auc_std=0.01,
        gauc_mean=0.55,
        gauc_std=0.01,
        logloss_mean=0.6,
        logloss_std=0.01,
        relaimpr=math.nan,
        relaimpr_gauc=math.nan,
        status="ok",
    )
    values.update(kw)
    return SummaryRow(**values)


def _record(model: str, seed: int, job: Path, **kw) -> dict:
    record = {
        "status": "ok",
        "model": model,
        "dataset": "synthetic",
        "reg": "none",
        "act": "prelu",
        "seed": seed,
        "job_num": seed,
        "job_dir": str(job),
        "overrides": [f"model={model}", f"seed={seed}"],
        "config": {"seed": seed, "model": {"name": model, "emb_dim": 8}, "optim": {"lr": 0.001}},
        "fingerprint": {"data": "arrays-abc", "code": {"ctrbench": "0.1.0"}, "device": "cpu"},
        "test_auc": 0.6,
        "test_gauc": 0.55,
        "test_logloss": 0.6,
    }
    record.update(kw)
    return record


def test_flatten_and_config_diff_by_hand() -> None:
    ref = {"seed": 1, "model": {"name": "base", "emb_dim": 8}, "optim": {"lr": 0.001}}
    other = {"seed": 2, "model": {"name": "din", "emb_dim": 8, "att_softmax": True}, "optim": {"lr": 0.01}}
    assert flatten(ref) == {"seed": 1, "model.name": "base", "model.emb_dim": 8, "optim.lr": 0.001}
    assert config_diff(ref, other) == [
        ("model.att_softmax", None, True),
        ("model.name", "base", "din"),
        ("optim.lr", 0.001, 0.01),
    ]  # the seed is left out: a row spans its seeds


def test_command_line_is_rebuilt_from_the_jobs_overrides(tmp_path: Path) -> None:
    records = [
        _record(m, s, tmp_path / f"{i}") for i, (m, s) in enumerate([("lr", 1), ("lr", 2), ("base", 1)])
    ]
    assert command_line(records) == "ctrbench -m model=lr,base seed=1,2"
    assert command_line(records[:1]) == "ctrbench model=lr seed=1"


def test_report_escapes_values_and_shows_new_columns_provenance_failures_and_diffs(tmp_path: Path) -> None:
    evil = '<script>alert("x")</script>'
    records = [
        _record("base", 1, tmp_path / "0", provenance={"python": "3.11.2", "git": {"commit": "abc123"}}),
        _record(
            "din",
            1,
            tmp_path / "1",
            job_num=1,
            status="failed",
            error=f"RuntimeError: {evil}\nsecond line of the traceback",
            config={"seed": 1, "model": {"name": "din", "emb_dim": 16}, "optim": {"lr": 0.001}},
            provenance={"python": "3.11.2", "git": {"commit": "def456"}},
            overrides=["model=din", "seed=1", f"+note={evil}"],
        ),
    ]
    # a SummaryRow with more columns (as significance fields would add), and a value from a file with markup
    Wider = dataclasses.make_dataclass(
        "Wider",
        [("delta_auc_ci", tuple, dataclasses.field(default=())), ("p_value", float, math.nan)],
        bases=(SummaryRow,),
    )
    base, din = summarize(records)
    assert evil in din.variant
    rows = [
        Wider(**dataclasses.asdict(base), delta_auc_ci=(0.001, 0.002), p_value=0.00004),
        Wider(**dataclasses.asdict(din)),
    ]
    out = write_report(tmp_path, records, rows, [f"note {evil}"], tmp_path / "report.html", images={})
    text = out.read_text(encoding="utf-8")
    assert evil not in text and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in text
    failures = text[text.index('id="failures"') :].split("</table>")[0]
    assert "RuntimeError: &lt;script&gt;" in failures and "second line" not in failures  # one line
    page = _parse(text)
    headers = [th["data-col"] for th in page.find("th") if th.get("data-col")]
    assert {"auc_mean", "relaimpr_gauc", "error", "delta_auc_ci", "p_value"} <= set(headers)
    assert "4e-05" in text and "[0.0010, 0.0020]" in text
    assert "provenance.python" in text and "provenance.git.commit" in text
    assert "abc123" in text and "def456" in text  # values that differ between jobs: each listed
    assert "fingerprint.data" in text and "arrays-abc" in text
    assert "model.emb_dim" in text and "model.name" in text  # din's config against base's
    assert text.count("<script>") == 1  # only the page's own sorting script
    _assert_self_contained(text)


def test_report_inlines_png_images_as_data_uris(tmp_path: Path) -> None:
    png = tmp_path / "curves.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 16)
    records = [_record("base", 1, tmp_path / "0")]
    out = write_report(
        tmp_path, records, summarize(records), [], tmp_path / "report.html", images={"curves": png}
    )
    imgs = _parse(out.read_text(encoding="utf-8")).find("img")
    assert [i["src"][:22] for i in imgs] == ["data:image/png;base64,"]


def _chromium(url: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ]
    proc = subprocess.run([CHROMIUM, *flags, *args, url], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def _dom(report: Path, tmp_path: Path, fragment: str = "") -> _Page:
    return _parse(_chromium(report.as_uri() + fragment, tmp_path, "--dump-dom").stdout)


@needs_chromium
def test_sorting_in_chromium_is_numeric_and_puts_empty_cells_last(tmp_path: Path) -> None:
    aucs = {"a": 9.0, "b": 10.0, "c": math.nan, "d": 100.0}  # as text, "10" < "100" < "9"
    rows = [_row("base", variant=f"v={k}", auc_mean=v) for k, v in aucs.items()]
    report = write_report(tmp_path, [], rows, [], tmp_path / "report.html", images={})
    assert _dom(report, tmp_path, "#sort=auc_mean").rows("summary") == ["v=a", "v=b", "v=d", "v=c"]
    assert _dom(report, tmp_path, "#sort=-auc_mean").rows("summary") == ["v=d", "v=b", "v=a", "v=c"]
    assert _dom(report, tmp_path, "#sort=-variant").rows("summary") == ["v=d", "v=c", "v=b", "v=a"]


@needs_chromium
def test_report_of_a_real_sweep_in_chromium(tmp_path: Path) -> None:
    from conftest import TINY, run_cli

    sweep = tmp_path / "sweep"
    args = ["-m", "model=lr,base", "seed=1,2", *TINY, "trainer.max_epochs=2", f"hydra.sweep.dir={sweep}"]
    proc = run_cli(args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = sweep / "report.html"
    assert "report.html" in proc.stdout.replace("\n", "")  # listed on the "wrote ..." line
    text = report.read_text(encoding="utf-8")
    _assert_self_contained(text)

    with (sweep / "summary.csv").open(encoding="utf-8") as fh:
        summary = list(csv.DictReader(fh))
    by_model = {r["model"]: float(r["auc_mean"]) for r in summary}
    pngs = sorted(p.name for p in sweep.glob("*.png"))
    assert pngs == ["curves.png", "relaimpr.png"]

    page = _dom(report, tmp_path)
    assert page.rows("summary") == ["lr", "base"]  # every summary row, in the summary's order
    headers = [th["data-col"] for th in page.find("th") if th.get("data-col")]
    assert set(summary[0]) <= set(headers)  # every summary.csv column
    imgs = page.find("img")
    assert len(imgs) == len(pngs) and all(i.get("data-ok") == "1" for i in imgs)  # decoded by the browser

    ascending = sorted(by_model, key=by_model.__getitem__)
    assert _dom(report, tmp_path, "#sort=auc_mean").rows("summary") == ascending
    assert _dom(report, tmp_path, "#sort=-auc_mean").rows("summary") == ascending[::-1]


def _sweep(folder: Path, runs: list[tuple[str, int, float]], data: str = "arrays-abc") -> Path:
    """A sweep folder of hand-written records: (model, seed, test AUC and GAUC) per job."""
    from ctrbench.results.record import write_result

    for num, (model, seed, auc) in enumerate(runs):
        job = folder / str(num)
        record = _record(model, seed, job, job_num=num, test_auc=auc, test_gauc=auc)
        record["fingerprint"] = {"data": data, "code": {"ctrbench": "0.1.0"}, "device": "cpu"}
        write_result(job, record)
    return folder


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_compare_puts_two_sweeps_in_one_table_labelled_by_folder(tmp_path: Path) -> None:
    from ctrbench.results.compare import compare

    a = _sweep(tmp_path / "baselines", [("base", 1, 0.6), ("base", 2, 0.6), ("lr", 1, 0.55)])
    b = _sweep(tmp_path / "idea", [("din", 1, 0.7), ("din", 2, 0.7), ("base", 1, 0.6)])
    rows, paths = compare(a, b, out_dir=tmp_path / "out")
    assert [(r.model, r.variant.split()[-1]) for r in rows] == [
        ("base", "sweep=baselines"),
        ("lr", "sweep=baselines"),
        ("din", "sweep=idea"),
        ("base", "sweep=idea"),  # the same config in both folders stays two rows
    ]
    # din against a base of the same variant is absent, so against the first base on the same data:
    # RelaImpr = ((0.7 - 0.5) / (0.6 - 0.5) - 1) * 100 = 100 %
    assert rows[2].relaimpr == pytest.approx(100.0)
    assert [r["model"] for r in _csv_rows(paths["csv"])] == ["base", "lr", "din", "base"]
    text = paths["html"].read_text(encoding="utf-8")
    assert _parse(text).rows("summary") == [
        "base sweep=baselines",
        "lr sweep=baselines",
        "din sweep=idea",
        "base sweep=idea",
    ]
    assert "ctrbench compare" in text and "# baselines: ctrbench -m model=base,lr seed=1,2" in text
    _assert_self_contained(text)


def test_compare_does_not_pair_records_of_different_data(tmp_path: Path) -> None:
    from ctrbench.results.compare import compare

    a = _sweep(tmp_path / "a", [("base", 1, 0.6)], data="arrays-abc")
    b = _sweep(tmp_path / "b", [("din", 1, 0.7)], data="arrays-xyz")
    rows, paths = compare(a, b, out_dir=tmp_path / "out")
    din = next(r for r in rows if r.model == "din")
    assert math.isnan(din.relaimpr) and "data" in din.fingerprint
    assert "a and b ran on different data (arrays-abc vs arrays-xyz)" in paths["md"].read_text(
        encoding="utf-8"
    )


def test_compare_command_default_folder_and_one_line_errors(tmp_path: Path) -> None:
    from conftest import run_cli

    a = _sweep(tmp_path / "runs" / "week1", [("base", 1, 0.6)])
    b = _sweep(tmp_path / "runs2" / "week1", [("din", 1, 0.7)])
    proc = run_cli(["compare", str(a), str(b)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = tmp_path / "compare-runs_week1-vs-runs2_week1"  # names told apart by their parent folder
    assert (out / "report.html").is_file() and (out / "summary.csv").is_file()

    proc = run_cli(["compare", str(a), str(tmp_path / "nope"), "--out", str(tmp_path / "o")], cwd=tmp_path)
    assert (
        proc.returncode == 2
        and proc.stderr.strip() == f"ctrbench: error: no such folder: {tmp_path / 'nope'}"
    )
    (tmp_path / "empty").mkdir()
    proc = run_cli(["compare", str(a), str(tmp_path / "empty"), "--out", str(tmp_path / "o")], cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"ctrbench: error: no result.json found under {tmp_path / 'empty'}"
    ]
    proc = run_cli(["compare", str(a), str(a)], cwd=tmp_path)
    assert proc.returncode == 2 and "are the same folder" in proc.stderr


def test_the_command_typed_is_shown_when_every_job_recorded_the_same(tmp_path: Path) -> None:
    typed = "ctrbench -m model=lr,base seed=1,2 hydra.sweep.dir=/x"
    records = [_record(m, 1, tmp_path / m, provenance={"command": typed}) for m in ("lr", "base")]
    assert command_line(records) == typed
    records[1]["provenance"] = {"command": "ctrbench -m model=base seed=1"}  # a resumed, narrower command
    assert command_line(records) == "ctrbench -m model=lr,base seed=1"


def test_display_table_says_shared_columns_once_and_sorts_by_leading_numbers(tmp_path: Path) -> None:
    rows = [_row("base", auc_mean=0.6), _row("din", auc_mean=0.65)]
    out = write_report(tmp_path, [], rows, [], tmp_path / "report.html")
    page = out.read_text()
    display = page[
        page.index('<table id="display"') : page.index("</table>", page.index('<table id="display"'))
    ]
    assert '<th data-col="Dataset">' not in display and '<th data-col="AUC">' in display
    assert "Every row: dataset: synthetic, reg: none, act: prelu" in page
    assert 'data-sort="0.6500">0.6500 ± 0.0100</td>' in display  # sorted by the mean, shown with its std
