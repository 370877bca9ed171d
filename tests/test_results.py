from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from omegaconf import OmegaConf
from rich.console import Console

from ctrbench.metrics import rela_impr
from ctrbench.results import read_results, render, rich_table, summarize, write_result, write_tables
from ctrbench.results.callback import SummaryCallback


def _record(
    model: str,
    seed: int,
    job_num: int | None,
    auc: float = 0.7,
    gauc: float = 0.65,
    logloss: float = 0.6,
    extra: list[str] | None = None,
    status: str = "ok",
    error: str | None = None,
) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "status": status,
        "error": error,
        "model": model,
        "dataset": "synthetic",
        "reg": "none",
        "act": "prelu",
        "seed": seed,
        "job_num": job_num,
        "overrides": [f"model={model}", f"seed={seed}", *(extra or [])],
    }
    if status == "ok":
        rec.update(test_auc=auc, test_gauc=gauc, test_logloss=logloss)
    return rec


def _write_all(root: Path, records: list[dict[str, Any]]) -> None:
    for rec in records:
        write_result(root / str(rec["job_num"]), rec)


# ---------------------------------------------------------------- record.py


def test_write_result_is_atomic_and_round_trips(tmp_path: Path) -> None:
    rec = _record("base", 1, 0)
    path = write_result(tmp_path / "job", rec)
    assert path == tmp_path / "job" / "result.json"
    assert sorted(p.name for p in path.parent.iterdir()) == ["result.json"]  # no temp file left
    assert json.loads(path.read_text()) == rec
    rec["test_auc"] = 0.8
    write_result(tmp_path / "job", rec)  # overwrite in place
    assert json.loads(path.read_text())["test_auc"] == 0.8
    assert sorted(p.name for p in path.parent.iterdir()) == ["result.json"]


def test_write_result_nan_and_inf_become_null(tmp_path: Path) -> None:
    rec = {"test_auc": math.nan, "epochs": [{"val_auc": math.inf}], "n": np.int64(3), "x": np.float32(0.5)}
    text = write_result(tmp_path, rec).read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"test_auc": None, "epochs": [{"val_auc": None}], "n": 3, "x": 0.5}


def test_write_result_interrupted_leaves_old_file_and_no_temp(tmp_path: Path, monkeypatch) -> None:
    write_result(tmp_path, {"status": "ok"})

    def interrupted(src: str, dst: str) -> None:
        assert Path(src).read_text().startswith("{")  # the full new text was in the temp file
        raise KeyboardInterrupt

    monkeypatch.setattr("ctrbench.results.record.os.replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_result(tmp_path, {"status": "failed"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]
    assert json.loads((tmp_path / "result.json").read_text()) == {"status": "ok"}


def test_read_results_recurses_adds_job_dir_and_skips_corrupt(tmp_path: Path) -> None:
    write_result(tmp_path / "sweep" / "0", _record("base", 1, 0))
    write_result(tmp_path / "sweep" / "1", _record("din", 1, 1))
    (tmp_path / "sweep" / "2").mkdir()
    (tmp_path / "sweep" / "2" / "result.json").write_text('{"status": "ok", "test_a')  # truncated
    (tmp_path / "sweep" / "3").mkdir()
    (tmp_path / "sweep" / "3" / "result.json").write_text("[1, 2]")  # not an object
    with pytest.warns(RuntimeWarning, match="skipping"):
        records = read_results(tmp_path)
    assert [r["model"] for r in records] == ["base", "din"]
    assert records[0]["job_dir"] == str(tmp_path / "sweep" / "0")


def test_read_results_skips_json_that_is_not_a_result_record(tmp_path: Path) -> None:
    write_result(tmp_path / "0", _record("base", 1, 0))
    for name, text in [("1", '{"foo": 1}'), ("2", "[]"), ("3", '{"status": "ok", "epochs": "x"}')]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "result.json").write_text(text)
    seen: list[str] = []
    records = read_results(tmp_path, warn=seen.append)
    assert [r["model"] for r in records] == ["base"]
    assert seen == [
        f"skipping {tmp_path / '1' / 'result.json'}: it has no 'status' string "
        "(not a ctrbench result record)",
        f"skipping {tmp_path / '2' / 'result.json'}: it holds an array, not a JSON object",
        f"skipping {tmp_path / '3' / 'result.json'}: its 'epochs' is a string, not an array",
    ]


# ---------------------------------------------------------------- summary.py


def test_summarize_groups_seeds_and_computes_mean_std() -> None:
    records = [
        _record("base", 1, 0, auc=0.70, gauc=0.66, logloss=0.60),
        _record("base", 2, 1, auc=0.72, gauc=0.67, logloss=0.58),
        _record("din", 1, 2, auc=0.75, gauc=0.69, logloss=0.55),
        _record("din", 2, 3, auc=0.74, gauc=0.70, logloss=0.57),
    ]
    rows = summarize(records)
    assert [r.model for r in rows] == ["base", "din"]
    base, din = rows
    assert (base.n_seeds, base.n_failed, base.status, base.variant) == (2, 0, "ok", "")
    assert din.auc_mean == pytest.approx(np.mean([0.75, 0.74]))
    assert din.auc_std == pytest.approx(np.std([0.75, 0.74], ddof=1))
    assert din.gauc_std == pytest.approx(np.std([0.69, 0.70], ddof=1))
    assert din.logloss_mean == pytest.approx(np.mean([0.55, 0.57]))
    assert base.relaimpr == 0.0
    assert din.relaimpr == pytest.approx(((0.745 - 0.5) / (0.71 - 0.5) - 1) * 100)
    assert din.relaimpr_gauc == pytest.approx(rela_impr(0.695, 0.665))


def test_summarize_orders_rows_by_job_num_not_by_input_order() -> None:
    records = [
        _record("din", 1, 11),
        _record("lr", 1, 2),
        _record("base", 1, 10),
        _record("lr", 2, 3),
        _record("din", 2, 1),
    ]
    rows = summarize(records)
    assert [r.model for r in rows] == ["din", "lr", "base"]  # first appearances: jobs 1, 2, 10
    assert [r.n_seeds for r in rows] == [2, 2, 1]
    assert rows[2].auc_std == 0.0  # one seed


def test_summarize_failed_configuration_and_partial() -> None:
    records = [
        _record("base", 1, 0),
        _record("base", 2, 1),
        _record("din", 1, 2, status="failed", error="ValueError: bad shape"),
        _record("din", 2, 3, status="failed", error="RuntimeError: later"),
        _record("dien", 1, 4),
        _record("dien", 2, 5, status="failed", error="KeyError: 'x'"),
    ]
    base, din, dien = summarize(records)
    assert base.status == "ok" and base.error is None and base.n_seeds == 2
    assert din.status == "failed" and din.error == "ValueError: bad shape"
    assert (din.n_seeds, din.n_failed) == (0, 2)
    assert math.isnan(din.auc_mean) and math.isnan(din.relaimpr)
    assert dien.status == "partial 1/2 failed" and dien.n_seeds == 1 and dien.error == "KeyError: 'x'"
    assert dien.auc_mean == pytest.approx(0.7)


def test_summarize_variants_and_base_row_choice() -> None:
    records = [
        _record("base", 1, 0, auc=0.70),
        _record("base", 1, 1, auc=0.80, extra=["optim.lr=0.01"]),
        _record("din", 1, 2, auc=0.75),
        _record("din", 1, 3, auc=0.85, extra=["optim.lr=0.01"]),
        _record("din", 1, 4, auc=0.90, extra=["model.attention=false"]),
    ]
    rows = summarize(records)
    assert [(r.model, r.variant) for r in rows] == [
        ("base", ""),
        ("base", "optim.lr=0.01"),
        ("din", ""),
        ("din", "optim.lr=0.01"),
        ("din", "model.attention=false"),
    ]
    assert rows[2].relaimpr == pytest.approx(rela_impr(0.75, 0.70))  # same variant
    assert rows[3].relaimpr == pytest.approx(rela_impr(0.85, 0.80))  # same variant
    assert rows[4].relaimpr == pytest.approx(rela_impr(0.90, 0.70))  # no match: first base row


def test_summarize_without_overrides_and_without_base() -> None:
    a = _record("din", 1, None, auc=0.7)
    b = _record("din", 2, None, auc=0.8)
    for r in (a, b):
        del r["overrides"]
    rows = summarize([a, b], base_model="base")
    assert len(rows) == 1 and rows[0].n_seeds == 2
    assert math.isnan(rows[0].relaimpr)


# ---------------------------------------------------------------- tables.py


def _rows() -> list:
    return summarize(
        [
            _record("base", 1, 0, auc=0.7312),
            _record("base", 2, 1, auc=0.7334),
            _record("din_v2", 1, 2, auc=0.75),
            _record("din_v2", 2, 3, auc=0.76),
            _record("dien", 1, 4, status="failed", error="ValueError: 100% | broken [x]"),
        ]
    )


def test_write_tables_and_parse_back(tmp_path: Path) -> None:
    rows = _rows()
    paths = write_tables(rows, tmp_path / "out")
    assert set(paths) == {"csv", "md", "tex"} and all(p.exists() for p in paths.values())

    with paths["csv"].open(newline="") as fh:
        parsed = list(csv.DictReader(fh))
    assert [p["model"] for p in parsed] == ["base", "din_v2", "dien"]
    assert float(parsed[0]["auc_mean"]) == rows[0].auc_mean  # full precision round trip
    assert float(parsed[1]["relaimpr"]) == rows[1].relaimpr
    assert int(parsed[1]["n_seeds"]) == 2
    assert parsed[2]["auc_mean"] == "" and parsed[2]["status"] == "failed"  # NaN → empty
    assert parsed[2]["error"] == "ValueError: 100% | broken [x]"

    md = paths["md"].read_text().strip().splitlines()
    assert md[0].startswith("| Model |") and set(md[1]) <= set("|-:")
    assert len(md) == 2 + len(rows)
    assert f"{rows[0].auc_mean:.4f} ± {rows[0].auc_std:.4f}" in md[2]
    assert f"{rows[1].relaimpr:+.2f}%" in md[3]
    assert md[4].count(" | ") == md[0].count(" | ")  # the error's pipe is escaped

    tex = paths["tex"].read_text()
    assert "\\begin{tabular}" in tex and "\\toprule" in tex and "\\bottomrule" in tex
    assert "din\\_v2" in tex and "din_v2" not in tex.replace("din\\_v2", "")
    assert "100\\%" in tex and "$\\pm$" in tex


def test_rich_table_marks_failed_rows_red() -> None:
    rows = _rows()
    table = rich_table(rows, title="t")
    assert table.row_count == 3
    assert table.rows[2].style == "red" and table.rows[0].style is None
    console = Console(file=io.StringIO(), width=300)
    console.print(table)
    out = console.file.getvalue()
    assert "ValueError: 100% | broken [x]" in out  # brackets are not eaten as markup


def test_render_writes_summary_and_returns_rows(tmp_path: Path) -> None:
    _write_all(tmp_path, [_record("base", 1, 0), _record("din", 1, 1, auc=0.8)])
    console = Console(file=io.StringIO(), width=200)
    rows = render(tmp_path, console=console)
    assert [r.model for r in rows] == ["base", "din"]
    assert (tmp_path / "summary.csv").exists() and (tmp_path / "summary.tex").exists()
    assert "din" in console.file.getvalue()
    other = tmp_path / "elsewhere"
    render(tmp_path, out_dir=other, console=console)
    assert (other / "summary.md").exists()


def test_render_raises_one_line_on_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as info:
        render(tmp_path, console=Console(file=io.StringIO()))
    assert str(tmp_path) in str(info.value) and "\n" not in str(info.value)


def test_report_skips_result_files_that_are_not_records_in_one_line_each(tmp_path: Path) -> None:
    from conftest import run_cli

    write_result(tmp_path / "0", _record("base", 1, 0))
    for name, text in [("1", '{"foo": 1}'), ("2", "[]")]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "result.json").write_text(text)
    proc = run_cli(["report", str(tmp_path)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [
        f"ctrbench: warning: skipping {tmp_path / '1' / 'result.json'}: it has no 'status' string "
        "(not a ctrbench result record)",
        f"ctrbench: warning: skipping {tmp_path / '2' / 'result.json'}: it holds an array, not a JSON object",
    ]
    with open(tmp_path / "summary.csv", newline="") as fh:
        assert [row["model"] for row in csv.DictReader(fh)] == ["base"]


def _make_unwritable(folder: Path) -> Callable[[], None] | None:
    """Make ``folder`` refuse new files for this user; returns the undo, or None where impossible.
    As root, permission bits do not stop writes: the immutable attribute (chattr +i) does."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return lambda: folder.chmod(0o755)
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(folder)], capture_output=True).returncode != 0:
        return None
    return lambda: subprocess.run([chattr, "-i", str(folder)], check=True)


def test_report_on_a_read_only_folder_is_one_line(tmp_path: Path) -> None:
    from conftest import run_cli

    folder = tmp_path / "results"
    write_result(folder / "0", _record("base", 1, 0))
    undo = _make_unwritable(folder)
    if undo is None:
        pytest.skip("running as root without chattr +i: no way to make a folder unwritable here")
    try:
        proc = run_cli(["report", str(folder)], cwd=tmp_path)
    finally:
        undo()
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"ctrbench: error: cannot write the summary into {folder}: ")
    assert lines[0].endswith("choose a folder with --out DIR")
    assert not (folder / "summary.csv").exists()
    other = tmp_path / "elsewhere"
    assert run_cli(["report", str(folder), "--out", str(other)], cwd=tmp_path).returncode == 0
    assert (other / "summary.csv").exists()


def test_report_write_failure_is_one_line_in_process(tmp_path: Path, monkeypatch, capsys) -> None:
    """The same error path with the write refused in-process (any user, also root)."""
    from ctrbench import cli

    write_result(tmp_path / "0", _record("base", 1, 0))

    real_open = Path.open

    def read_only(self, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+"):
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", read_only)
    assert cli.main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"ctrbench: error: cannot write the summary into {tmp_path}: Permission denied; "
        "choose a folder with --out DIR\n"
    )


# ---------------------------------------------------------------- callback.py


def test_callback_renders_sweep_and_never_raises(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _write_all(tmp_path / "sweep", [_record("base", 1, 0)])
    cb = SummaryCallback(base_model="base")
    cb.on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "sweep")}}}))
    assert (tmp_path / "sweep" / "summary.csv").exists()

    cb.on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "empty")}}}))
    assert "summary not written" in caplog.text

    run = tmp_path / "run"
    write_result(run, _record("base", 1, None))
    hydra_cfg = {"hydra": {"run": {"dir": "unused"}, "runtime": {"output_dir": str(run)}}}
    cb.on_run_end(OmegaConf.create(hydra_cfg))
    assert (run / "summary.md").exists()


def _curve_record(reg: str, seed: int, job_num: int, aucs: list[float]) -> dict[str, Any]:
    rec = _record("base", seed, job_num, extra=[f"reg={reg}"])
    rec["reg"] = reg
    rec["epochs"] = [{"epoch": e, "test_auc": a, "train_loss": 1.0 - 0.1 * e} for e, a in enumerate(aucs)]
    return rec


def test_curve_series_mean_std_per_epoch_and_png(tmp_path: Path) -> None:
    from ctrbench.results.curves import curve_series, plot_curves

    records = [
        _curve_record("none", 1, 0, [0.70, 0.66, 0.60]),
        _curve_record("mba", 1, 1, [0.70, 0.72, 0.73]),
        _curve_record("none", 2, 2, [0.72, 0.68, 0.62]),
        _curve_record("mba", 2, 3, [0.72, 0.74, 0.73]),
    ]
    series = curve_series(records, "test_auc")
    assert list(series) == ["none", "mba"]  # labels: the only column that differs
    epochs, mean, std = series["none"]
    assert epochs.tolist() == [1, 2, 3]
    assert mean.tolist() == pytest.approx([0.71, 0.67, 0.61])
    assert std.tolist() == pytest.approx([np.std([0.70, 0.72], ddof=1)] * 3)
    png = plot_curves(records, tmp_path / "curves.png")
    assert png is not None and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert (
        plot_curves([_curve_record("none", 1, 0, [0.7])], tmp_path / "one.png") is None
    )  # one epoch: no plot


def test_curves_put_dien_target_and_auxiliary_loss_on_one_panel(tmp_path: Path) -> None:
    import matplotlib.image

    from ctrbench.results.curves import plot_curves

    plain = [_curve_record("none", 1, 0, [0.70, 0.72])]
    with_aux = [_curve_record("none", 1, 0, [0.70, 0.72])]
    for e, epoch in enumerate(with_aux[0]["epochs"]):
        epoch.update(train_ctr_loss=0.6 - 0.1 * e, train_aux=0.9 - 0.2 * e)
    narrow = matplotlib.image.imread(str(plot_curves(plain, tmp_path / "a.png")))
    wide = matplotlib.image.imread(str(plot_curves(with_aux, tmp_path / "b.png")))
    assert wide.shape[1] > narrow.shape[1]  # one more panel: the target and the auxiliary loss


def test_relaimpr_bars_are_per_seed_mean_and_std_against_the_base(tmp_path: Path) -> None:
    from ctrbench.results.bars import plot_relaimpr, relaimpr_series

    records = [
        _record("base", 1, 0, auc=0.60),
        _record("base", 2, 1, auc=0.62),
        _record("din", 1, 2, auc=0.66),
        _record("din", 2, 3, auc=0.68),
    ]
    series = relaimpr_series(records, "base")
    assert list(series) == ["din"]  # the base row itself gets no bar
    per_seed = [((a - 0.5) / (0.61 - 0.5) - 1) * 100 for a in (0.66, 0.68)]  # DIN eq. 11 vs base's mean
    assert series["din"] == pytest.approx((np.mean(per_seed), np.std(per_seed, ddof=1)))
    png = plot_relaimpr(records, tmp_path / "relaimpr.png")
    assert png is not None and png.stat().st_size > 5000
    assert plot_relaimpr(records[:2], tmp_path / "none.png") is None  # nothing to compare
