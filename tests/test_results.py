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
from ctrbench.results.summary import row_labels
from ctrbench.results.tables import paired_notes


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
    one = plot_curves([_curve_record("none", 1, 0, [0.7])], tmp_path / "one.png")
    assert one is not None and one.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # one epoch: points
    assert plot_curves([_curve_record("none", 1, 0, [])], tmp_path / "none.png") is None  # no history


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


# ---------------------------------------------------------------- paired comparison with the reference row


def _paired_record(
    model: str, seed: int, job_num: int, auc: float, gauc: float, data: str = "d1"
) -> dict[str, Any]:
    rec = _record(model, seed, job_num, auc=auc, gauc=gauc)
    rec["fingerprint"] = {"data": data, "code": {"ctrbench": "1"}, "device": "cpu"}
    return rec


def _write_predictions(
    job: Path, y: np.ndarray, prob: np.ndarray, groups: np.ndarray, perm: np.ndarray
) -> None:
    """A ``predictions.npz`` as jobs write it, its rows stored in the order ``perm``."""
    rows = np.arange(y.size, dtype=np.int64)
    np.savez(
        job / "predictions.npz",
        test_label=y[perm].astype(np.int8),
        test_prob=prob[perm].astype(np.float32),
        test_group=groups[perm].astype(np.int64),
        test_row=rows[perm],
        val_label=y[:5].astype(np.int8),
        val_prob=prob[:5].astype(np.float32),
        val_group=groups[:5].astype(np.int64),
        val_row=rows[:5],
        epoch=np.array(1),
    )


def _sweep_with_predictions(
    root: Path, models: dict[str, float], seeds: list[int], n_users: int = 60, shuffle_jobs: int = 0
) -> None:
    """Jobs of ``models`` (score strength per model) × ``seeds``, each with result.json and predictions;
    the job numbers are shuffled (``shuffle_jobs`` seeds the shuffle) so folder order is not seed order."""
    rng = np.random.default_rng(0)
    sizes = rng.integers(5, 15, n_users)
    groups = np.repeat(np.arange(n_users), sizes)
    jobs = [(m, s) for m in models for s in seeds]
    order = np.random.default_rng(shuffle_jobs).permutation(len(jobs))
    from ctrbench.metrics import auc as auc_fn
    from ctrbench.metrics import gauc as gauc_fn

    for num, (model, seed) in zip(order.tolist(), jobs, strict=True):
        data_rng = np.random.default_rng(100 + seed)  # the seed's test labels, the same for every model
        y = data_rng.integers(0, 2, groups.size)
        noise = np.random.default_rng(1000 * seed + len(model)).normal(size=groups.size)
        prob = 1 / (1 + np.exp(-(models[model] * y + noise)))
        rec = _paired_record(model, seed, num, auc_fn(y, prob), gauc_fn(y, prob, groups))
        rec["predictions"] = "predictions.npz"
        job = root / str(num)
        write_result(job, rec)
        _write_predictions(job, y, prob, groups, np.random.default_rng(num).permutation(groups.size))


def test_paired_columns_pair_seeds_by_value_whatever_the_job_order() -> None:
    from scipy import stats

    base = {1: 0.70, 2: 0.72, 3: 0.71}
    din = {3: 0.74, 1: 0.72, 2: 0.73}
    records = [
        _paired_record("din", s, n, din[s], 0.6 + din[s] / 10)
        for n, s in zip([0, 1, 2], [3, 1, 2], strict=True)
    ]
    records += [_paired_record("base", s, n, base[s], 0.6) for n, s in zip([5, 3, 4], [1, 2, 3], strict=True)]
    rows = summarize(records[::-1])
    by = {r.model: r for r in rows}
    assert by["base"].is_reference and not by["din"].is_reference
    din_row = by["din"]
    diffs = np.array([din[s] - base[s] for s in (1, 2, 3)])  # 0.02, 0.01, 0.03 by seed value
    half = stats.t.ppf(0.975, 2) * diffs.std(ddof=1) / math.sqrt(3)
    assert din_row.against == "base" and din_row.n_paired == 3 and din_row.wins_auc == 3
    assert din_row.d_auc == pytest.approx(0.02)
    assert (din_row.d_auc_low, din_row.d_auc_high) == (pytest.approx(0.02 - half), pytest.approx(0.02 + half))
    p = stats.ttest_rel([din[s] for s in (1, 2, 3)], [base[s] for s in (1, 2, 3)]).pvalue
    assert din_row.p_auc == pytest.approx(p) and din_row.p_auc_holm == pytest.approx(p)  # one row compared
    assert din_row.delong_tested == 0 and "predictions.npz missing" in din_row.pair_note


def test_paired_columns_holm_over_rows_and_cannot_pair_reasons() -> None:
    records = [_paired_record("base", s, s, 0.70 + s / 1000, 0.6) for s in (1, 2, 3)]
    records += [_paired_record("din", s, 10 + s, 0.72 + s / 500, 0.6) for s in (1, 2, 3)]
    records += [_paired_record("dien", s, 20 + s, 0.71 + (s % 2) / 100, 0.6) for s in (1, 2, 3)]
    records += [_paired_record("lr", 7, 30, 0.6, 0.5), _paired_record("lr", 1, 31, 0.6, 0.5)]
    rows = {r.model: r for r in summarize(records)}
    from ctrbench.results.significance import holm

    adjusted = holm([rows["din"].p_auc, rows["dien"].p_auc])
    assert [rows["din"].p_auc_holm, rows["dien"].p_auc_holm] == pytest.approx(adjusted)
    assert rows["din"].p_auc_holm != pytest.approx(rows["din"].p_auc)
    assert rows["lr"].pair_note == "cannot pair: fewer than 2 common seeds (common: 1)"
    assert math.isnan(rows["lr"].d_auc) and math.isnan(rows["lr"].p_auc_holm)


def test_paired_columns_in_files_notes_and_against(tmp_path: Path) -> None:
    _sweep_with_predictions(tmp_path, {"base": 0.3, "din": 2.0, "dien": 0.3}, [1, 2, 3], shuffle_jobs=4)
    console = Console(file=io.StringIO(), width=250)
    rows = {r.model: r for r in render(tmp_path, console=console, n_boot=200)}
    din = rows["din"]
    assert din.n_paired == 3 and din.delong_tested == din.boot_tested == 3
    assert din.delong_sig == din.boot_sig == 3 and din.pair_note == ""
    assert rows["dien"].delong_tested == 3
    with (tmp_path / "summary.csv").open(newline="") as fh:
        parsed = {p["model"]: p for p in csv.DictReader(fh)}
    assert float(parsed["din"]["d_auc"]) == din.d_auc and parsed["din"]["delong_sig"] == "3"
    md = (tmp_path / "summary.md").read_text()
    assert "DeLong 3/3, boot 3/3" in md and "| ref |" in md
    assert "Holm-adjusted over 2 rows compared against base" in md
    assert "DeLong (AUC), paired bootstrap over users, 200 resamples (GAUC)" in md
    out = console.file.getvalue()
    assert "ΔAUC" in out and "DeLong 3/3" in out
    # against another model: base and dien are compared with din
    rows2 = {r.model: r for r in summarize(read_results(tmp_path), against="din", n_boot=50)}
    assert rows2["din"].is_reference and rows2["base"].against == "din"
    assert rows2["base"].d_auc == pytest.approx(-din.d_auc)
    with pytest.raises(ValueError, match="--against 'nope': no row or model of that name; rows: "):
        summarize(read_results(tmp_path), against="nope")


def test_paired_columns_different_test_rows_and_data(tmp_path: Path) -> None:
    _sweep_with_predictions(tmp_path, {"base": 0.3, "din": 1.0}, [1, 2])
    for job in tmp_path.iterdir():
        rec = json.loads((job / "result.json").read_text())
        if rec["model"] == "din" and rec["seed"] == 2:
            with np.load(job / "predictions.npz") as npz:
                arrays = dict(npz)
            arrays["test_row"] = arrays["test_row"] + 1
            np.savez(job / "predictions.npz", **arrays)
    rows = {r.model: r for r in summarize(read_results(tmp_path))}
    assert rows["din"].pair_note == "cannot pair: different test rows (seed 2)"
    assert paired_notes(list(rows.values())) == ["din vs base: cannot pair: different test rows (seed 2)."]
    assert (
        "| din | synthetic | none | prelu |  | 2 |"
        in write_tables(list(rows.values()), tmp_path)["md"].read_text()
    )
    md = write_tables(list(rows.values()), tmp_path)["md"].read_text().splitlines()
    din_line = next(line for line in md if line.startswith("| din "))
    assert din_line.count("| — |") >= 1 and "DeLong" not in din_line
    records = read_results(tmp_path)
    for rec in records:
        if rec["model"] == "din":
            rec["fingerprint"] = {**rec["fingerprint"], "data": "other"}
    rows = summarize(records)
    assert all(not r.against for r in rows)  # other data: no base row at all, so nothing compared
    label = next(lab for lab in row_labels(rows) if lab.startswith("din"))
    rows = {r.model: r for r in summarize(records, against=label)}  # named explicitly: told why not
    assert rows["base"].pair_note == "cannot pair: different data fingerprint (seed 1)"


def test_paired_notes_group_rows_with_the_same_reason() -> None:
    records = [_paired_record("base", s, s, 0.7, 0.6) for s in (1, 2)]
    records += [_paired_record(f"m{i}", 9, 10 + i, 0.7, 0.6) for i in range(7)]
    notes = paired_notes(summarize(records))
    assert notes == [
        "m0, m1, m2, m3, m4 and 2 more vs base: cannot pair: fewer than 2 common seeds (common: none)."
    ]


def test_report_against_option_and_bad_bootstrap_are_one_line(tmp_path: Path, capsys) -> None:
    from ctrbench.cli import cmd_report

    _sweep_with_predictions(tmp_path, {"base": 0.3, "din": 1.0}, [1, 2], n_users=20)
    assert cmd_report([str(tmp_path), "--against", "din", "--bootstrap", "50"]) == 0
    assert "compared against din" in (tmp_path / "summary.md").read_text()
    assert cmd_report([str(tmp_path), "--against", "nope"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--against 'nope': no row or model of that name" in err[0]
    assert cmd_report([str(tmp_path), "--bootstrap", "0"]) != 0
    assert "--bootstrap 0: the number of bootstrap resamples must be at least 1" in capsys.readouterr().err


def test_paired_summary_of_three_models_by_five_seeds_is_fast(tmp_path: Path) -> None:
    import time

    _sweep_with_predictions(tmp_path, {"base": 0.3, "din": 0.5, "dien": 0.6}, [1, 2, 3, 4, 5], n_users=2000)
    records = read_results(tmp_path)
    start = time.perf_counter()
    rows = summarize(records)
    elapsed = time.perf_counter() - start
    assert all(r.boot_tested == 5 for r in rows if r.model != "base")
    assert elapsed < 5.0, elapsed


def test_per_seed_significance_says_how_many_seeds_go_against_the_row(tmp_path: Path) -> None:
    """A row significantly *below* its reference is not shown like a winner: ``(k worse)``."""
    _sweep_with_predictions(tmp_path, {"base": 2.0, "din": 3.0, "dien": 0.5}, [1, 2, 3], n_users=150)
    rows = {r.model: r for r in render(tmp_path, console=Console(file=io.StringIO(), width=200))}
    din, dien = rows["din"], rows["dien"]
    assert din.delong_sig == 3 and din.delong_sig_worse == 0 and din.boot_sig_worse == 0
    assert dien.delong_sig == 3 and dien.delong_sig_worse == 3 and dien.boot_sig_worse == dien.boot_sig
    md = (tmp_path / "summary.md").read_text()
    assert "| DeLong 3/3 (3 worse), boot 3/3 (3 worse) |" in md and "| DeLong 3/3, boot 3/3 |" in md
