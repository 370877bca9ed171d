"""The paper presets (conf/experiment/din_table*.yaml, dien_table*.yaml) and the paper layout of summaries."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, TINY
from rich.console import Console

from ctrbench import registry
from ctrbench.cli import main
from ctrbench.metrics import rela_impr
from ctrbench.results import render, write_result
from ctrbench.results.paper import TABLES, get_table, layout
from ctrbench.results.summary import summarize

PRESETS = ["din_table3", "din_table4", "din_table5", "dien_table2", "dien_table4"]
SEEDS = {"din_table3": 5, "din_table4": 3, "din_table5": 3, "dien_table2": 5, "dien_table4": 5}
# the paper's datasets each preset sweeps (conf/paper_data); none: the preset's one dataset
PAPER_DATA = {
    "din_table3": ["din_movielens", "din_electronics"],
    "dien_table2": ["dien_electronics", "dien_books"],
    "dien_table4": ["dien_electronics", "dien_books"],
}
# the row each smoke test runs: the one that combines the most of the preset's settings
BATCH = {"din_table3": 32, "din_table4": 5000, "din_table5": 5000, "dien_table2": 128, "dien_table4": 128}
SMOKE_ROW = {
    "din_table3": "din_dice",
    "din_table4": "no_goods",
    "din_table5": "din_mba_dice",
    "dien_table2": "dien",
    "dien_table4": "augru",
}
# TINY without its experiment (a preset is the experiment here), plus what experiment=smoke sets and
# a few training batches: the job takes about as long as the process takes to start
SMALL = [o for o in TINY if not o.startswith("+experiment=")] + [
    "dataset.n_cats=20",
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=10",
    "trainer.enable_progress_bar=false",
    "checkpoint=false",
]


def _rows(preset: str) -> list[str]:
    return [p.stem for p in sorted((ROOT / "conf" / "row" / preset).glob("*.yaml"))]


@pytest.fixture(scope="module")
def compose_hydra():
    """compose() over ctrbench's conf/ that keeps the ``hydra`` node (the preset's sweep parameters)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from ctrbench.cli import conf_dir

    registry.register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(conf_dir())):
        yield lambda overrides=(): compose("config", overrides=list(overrides), return_hydra_config=True)
    GlobalHydra.instance().clear()


def _jobs(cfg: Any, command_line: list[str]) -> list[list[str]]:
    """The jobs Hydra's basic sweeper makes of the preset's ``hydra.sweeper.params`` and a command line."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = [f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()]
    overrides = OverridesParser.create().parse_overrides(params + command_line)
    return BasicSweeper.split_arguments(overrides, None)[0]


# ---------------------------------------------------------------- the paper's numbers as data


def test_paper_tables_are_consistent_with_the_row_configs() -> None:
    assert list(TABLES) == PRESETS
    for table in TABLES.values():
        names = [r.row for r in table.rows]
        assert sorted(names) == _rows(table.id), table.id  # one conf/row file per paper row, no more
        assert table.row(table.reference) is not None and table.metric in ("auc", "gauc")
        ref = table.row(table.reference)
        for row in table.rows:
            assert len(row.auc) == len(table.datasets), row.label
            assert len(row.relaimpr) in (0, len(table.datasets)), row.label
            # the transcribed RelaImpr agrees with the transcribed AUCs (DIN eq. 11, 4-digit rounding)
            for i, value in enumerate(row.relaimpr):
                assert rela_impr(row.auc[i], ref.auc[i]) == pytest.approx(value, abs=0.006), row.label
    assert get_table("dien_table2").row("dien").auc == (0.9030, 0.9281)  # the early version's Table 2
    with pytest.raises(KeyError, match="unknown paper table 'nope'"):
        get_table("nope")


# ---------------------------------------------------------------- composition and sweep grid


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_composes_and_sweeps_the_papers_grid(preset: str, compose_hydra) -> None:
    cfg = compose_hydra([f"+experiment={preset}"])
    assert cfg.paper == preset
    rows = [r.row for r in TABLES[preset].rows]
    jobs = _jobs(cfg, [])
    data = PAPER_DATA.get(preset, [])
    assert len(jobs) == len(rows) * max(1, len(data)) * SEEDS[preset]
    assert [j for j in jobs[0] if j.startswith("row=")] == [f"row={preset}/{rows[0]}"]  # the paper's order
    assert {o for j in jobs for o in j if o.startswith("+paper_data=")} == {f"+paper_data={d}" for d in data}
    if data:  # the preset's own dataset: the paper's datasets run; each sets its dataset and protocol
        for name, column in zip(data, TABLES[preset].datasets, strict=True):
            dataset = compose_hydra([f"+experiment={preset}", f"+paper_data={name}"]).dataset
            assert {k: dataset[k] for k in column.match} == dict(column.match)

    # the command line wins: a dataset of its own replaces the paper's, a row and a seed replace theirs
    cfg = compose_hydra([f"+experiment={preset}", "dataset=synthetic", "trainer.max_epochs=1"])
    assert cfg.dataset.name == "synthetic" and cfg.trainer.max_epochs == 1
    jobs = _jobs(cfg, ["dataset=synthetic"])
    assert len(jobs) == len(rows) * SEEDS[preset]
    assert all("+paper_data=none" in j for j in jobs) if data else True
    one = _jobs(cfg, ["dataset=synthetic", f"row={preset}/{rows[-1]}", "seed=1"])
    assert len(one) == 1 and f"row={preset}/{rows[-1]}" in one[0] and "seed=1" in one[0]
    cfg = compose_hydra([f"+experiment={preset}", "hydra.sweeper.params.seed=7"])
    assert {o for j in _jobs(cfg, []) for o in j if o.startswith("seed=")} == {"seed=7"}


@pytest.mark.parametrize("preset", PRESETS)
def test_every_row_composes_to_its_paper_row(preset: str, compose_cfg) -> None:
    for spec in TABLES[preset].rows:
        cfg = compose_cfg([f"+experiment={preset}", f"row={preset}/{spec.row}", "dataset=synthetic"])
        assert cfg.model.name == spec.model, spec.row
        assert spec.act in (None, cfg.act.name) and spec.reg in (None, cfg.reg.name), spec.row
        for key, value in spec.config.items():
            node = cfg
            for part in key.split("."):
                node = node[part]
            assert node == value, (spec.row, key)
        if preset.startswith("din_table4") or (preset == "din_table5" and spec.model != "lr"):
            assert cfg.model.emb_dim == 12  # DIN §6.1, Alibaba


def test_preset_hyper_parameters(compose_cfg) -> None:
    din3 = compose_cfg(["+experiment=din_table3"])
    assert (din3.optim.name, din3.optim.lr, din3.batch_size) == ("adam", 0.001, 32)  # batch: DIN §6.1
    assert din3.trainer.max_epochs == 3
    for preset in ("din_table4", "din_table5"):
        cfg = compose_cfg([f"+experiment={preset}"])
        assert (cfg.optim.name, cfg.optim.lr, cfg.batch_size) == ("adam", 0.001, 5000)  # DIN §6.1, Alibaba
        assert cfg.dataset.n_items >= 1_000_000 and cfg.trainer.max_epochs == 5
    for preset in ("dien_table2", "dien_table4"):
        cfg = compose_cfg([f"+experiment={preset}"])
        assert (cfg.optim.name, cfg.optim.lr, cfg.batch_size) == ("adam", 0.001, 128)  # official code
        assert cfg.dataset.max_len == 100 and cfg.trainer.max_epochs == 3
    assert "paper" not in compose_cfg(["+experiment=smoke"])  # no paper layout for other experiments


# ---------------------------------------------------------------- one tiny job per preset


# Runs `ctrbench ARGS` for every ARGS in sys.argv[1] (JSON) in this one interpreter, through the
# command's own main(): most of a `python -m ctrbench` is importing torch and Lightning, done once here.
_SMOKE_SCRIPT = """
import json, sys
from hydra.core.global_hydra import GlobalHydra
from ctrbench.cli import main
for args in json.loads(sys.argv[1]):
    GlobalHydra.instance().clear()
    print("ctrbench exit", main(args), flush=True)
"""


@pytest.fixture(scope="module")
def smoke_runs(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess, dict[str, Path]]:
    """Every preset's tiny sweep (one row, one seed, synthetic data), in one Python process."""
    root = tmp_path_factory.mktemp("smoke")
    sweeps = {preset: root / preset for preset in PRESETS}
    commands = []
    for preset, sweep in sweeps.items():
        # the sweep parameters can be replaced as plain overrides (row=, seed=) or in hydra.sweeper.params
        seed = "hydra.sweeper.params.seed=2" if preset == "din_table4" else "seed=2"
        row = f"row={preset}/{SMOKE_ROW[preset]}"
        commands.append(["-m", f"+experiment={preset}", "dataset=synthetic", *SMALL, row, seed])
        commands[-1].append(f"hydra.sweep.dir={sweep}")
    env = dict(os.environ, WANDB_MODE="disabled", HYDRA_FULL_ERROR="0", PYTHONWARNINGS="ignore")
    proc = subprocess.run(
        [sys.executable, "-c", _SMOKE_SCRIPT, json.dumps(commands)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return proc, sweeps


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_smoke_run_on_synthetic(preset: str, smoke_runs) -> None:
    proc, sweeps = smoke_runs
    assert proc.returncode == 0 and proc.stdout.count("ctrbench exit 0") == len(PRESETS), proc.stderr[-3000:]
    sweep, row = sweeps[preset], SMOKE_ROW[preset]
    results = list(sweep.glob("*/result.json"))
    assert len(results) == 1, proc.stderr[-3000:]
    record = json.loads(results[0].read_text())
    assert record["status"] == "ok", record.get("error")
    assert record["seed"] == 2 and record["config"]["paper"] == preset
    config = record["config"]
    assert config["dataset"]["name"] == "synthetic" and config["trainer"]["max_epochs"] == 1
    assert config["batch_size"] == BATCH[preset]  # what the command line leaves alone is the preset's
    spec = TABLES[preset].row(row)
    assert record["model"] == spec.model and spec.reg in (None, record["reg"])

    with open(sweep / "summary.csv", newline="") as fh:
        lines = list(csv.DictReader(fh))
    table = TABLES[preset]
    ours = [line for line in lines if line["status"] == "ok"]
    assert len(ours) == 1 and ours[0]["paper_row"] == spec.label and ours[0]["n_seeds"] == "1"
    placeholders = [line for line in lines if line["status"] == "not run"]
    if table.datasets[0].match:  # synthetic is none of the paper's datasets: every paper row is "not run"
        assert len(placeholders) == len(table.rows) * len(table.datasets)
        assert ours[0]["paper_auc"] == "" and lines[0] is ours[0]  # the row that ran comes first
        paper_rows = lines[1 : 1 + len(table.rows)]
    else:  # DIN's Alibaba tables: synthetic data stands in for it
        assert len(placeholders) == len(table.rows) - 1
        assert float(ours[0]["paper_auc"]) == spec.auc[0]
        paper_rows = lines[: len(table.rows)]
    assert [line["paper_row"] for line in paper_rows] == [r.label for r in table.rows]
    assert table.title in (sweep / "summary.md").read_text()


# ---------------------------------------------------------------- paper layout from fake records


def _record(
    job: int, model: str, dataset: dict[str, Any], auc: float, row: str | None = None, **plugins: str
) -> dict[str, Any]:
    overrides = [f"row={row}"] if row else [f"model={model}"]
    return {
        "status": "ok",
        "error": None,
        "model": model,
        "dataset": dataset["name"],
        "reg": plugins.get("reg", "none"),
        "act": plugins.get("act", "prelu"),
        "seed": 1,
        "job_num": job,
        "overrides": [*overrides, "seed=1"],
        "config": {"paper": "din_table3", "dataset": dataset, "reg": {"name": plugins.get("reg", "none")}},
        "test_auc": auc,
        "test_gauc": auc - 0.01,
        "test_logloss": 0.5,
    }


ELECTRONICS = {"name": "amazon", "protocol": "din", "category": "Electronics", "max_len": 100}
MOVIELENS = {"name": "movielens", "version": "ml-20m"}


def _csv(folder: Path) -> list[dict[str, str]]:
    with open(folder / "summary.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_paper_layout_orders_rows_fills_paper_numbers_and_keeps_extras(tmp_path: Path) -> None:
    records = [  # run out of the paper's order, one dataset only partly, one model the paper lacks
        _record(0, "din", ELECTRONICS, 0.88, row="din_table3/din_dice", act="dice"),
        _record(1, "dien", ELECTRONICS, 0.89),
        _record(2, "base", ELECTRONICS, 0.86, row="din_table3/base"),
        _record(3, "lr", MOVIELENS, 0.72, row="din_table3/lr"),
        _record(4, "din", ELECTRONICS, 0.87),  # no row override: recognised by model, act and reg
    ]
    for rec in records:
        write_result(tmp_path / str(rec["job_num"]), rec)
    out = io.StringIO()
    render(tmp_path, console=Console(file=out, width=200))
    lines = _csv(tmp_path)
    table = TABLES["din_table3"]
    labels = [r.label for r in table.rows]
    assert [line["paper_row"] for line in lines] == labels + labels + [""]  # MovieLens, Amazon, extra
    assert [line["paper_dataset"] for line in lines] == ["MovieLens"] * 7 + ["Amazon(Electro)"] * 7 + [""]
    assert [float(line["paper_auc"]) for line in lines[:14]] == [r.auc[0] for r in table.rows] + [
        r.auc[1] for r in table.rows
    ]
    assert float(lines[7]["paper_relaimpr"]) == -24.34 and lines[-1]["paper_auc"] == ""
    assert {line["paper_metric"] for line in lines} == {"gauc"}  # DIN's "AUC" is eq. (10)
    ran = {i: line for i, line in enumerate(lines) if line["status"] == "ok"}
    assert sorted(ran) == [0, 8, 12, 13, 14]  # MovieLens LR; Amazon BaseModel, DIN, DIN with Dice; extra
    assert ran[14]["model"] == "dien" and ran[13]["act"] == "dice" and ran[12]["act"] == "prelu"
    assert all(lines[i]["status"] == "not run" and lines[i]["auc_mean"] == "" for i in (1, 7, 9))
    # RelaImpr against BaseModel on the same data (GAUC = AUC - 0.01 here)
    assert float(ran[13]["relaimpr"]) == pytest.approx(rela_impr(0.88, 0.86))
    assert float(ran[13]["relaimpr_gauc"]) == pytest.approx(rela_impr(0.87, 0.85))
    assert float(ran[14]["relaimpr"]) == pytest.approx(rela_impr(0.89, 0.86))
    assert math.isnan(float(ran[0]["relaimpr"] or "nan"))  # no BaseModel on MovieLens
    md = (tmp_path / "summary.md").read_text()
    assert "| DIN with Dice | Amazon(Electro) | din |" in md and "0.8871" in md and "+6.82%" in md
    assert "\\begin{tabular}" in (tmp_path / "summary.tex").read_text()
    printed = out.getvalue()
    assert "DIN Table 3" in printed and "not run" in printed and "(dien)" in printed


def test_paper_layout_relaimpr_against_the_tables_reference_row() -> None:
    goods = {"name": "synthetic", "n_items": 1_000_000}
    recs = [
        _record(0, "base", goods, 0.70, row="din_table4/mba", reg="mba"),
        _record(1, "base", goods, 0.60, row="din_table4/no_goods", reg="filter"),
        _record(2, "base", goods, 0.65, row="din_table4/filter", reg="filter"),
    ]
    laid = layout("din_table4", recs, summarize(recs))
    table = TABLES["din_table4"]
    assert [line.label for line in laid.rows] == [r.label for r in table.rows]
    assert [line.run for line in laid.rows] == [True, False, False, True, False, True]
    no_goods, _, _, filtered, _, mba = laid.rows
    assert mba.summary.relaimpr == pytest.approx(rela_impr(0.70, 0.60))  # against the first line
    assert no_goods.summary.relaimpr == 0.0 and filtered.summary.auc_mean == 0.65
    assert (filtered.paper_auc, filtered.paper_relaimpr, filtered.dataset) == (0.5983, 4.57, "Alibaba")


def test_paired_tests_compare_with_the_tables_reference_row(tmp_path: Path) -> None:
    """DIN Table 4's rows are all BaseModel: each would be its own base row; the paper compares every
    line with its first, and so do the paired columns."""
    goods = {"name": "synthetic", "n_items": 1_000_000}
    rows = [("din_table4/no_goods", "filter", 0.60), ("din_table4/none", "none", 0.64)]
    rows += [("din_table4/mba", "mba", 0.70)]
    job = 0
    for seed, shift in ((1, 0.0), (2, 0.01), (3, -0.004)):
        for row, reg, auc in rows:
            rec = _record(job, "base", goods, auc + shift * (auc > 0.6), row=row, reg=reg)
            rec["config"]["paper"] = "din_table4"
            rec["seed"], rec["overrides"] = seed, [f"row={row}", f"seed={seed}"]
            write_result(tmp_path / str(job), rec)
            job += 1
    summary = render(tmp_path, console=Console(file=io.StringIO()))
    reference = next(r for r in summary if r.is_reference)
    assert reference.reg == "filter" and reference.auc_mean == pytest.approx(0.60)
    none, mba = (r for r in summary if not r.is_reference)
    assert none.against == mba.against != "" and none.n_paired == mba.n_paired == 3
    assert mba.d_auc == pytest.approx(0.10 + (0.01 - 0.004) / 3)  # paired seed by seed with the first line
    assert none.d_auc == pytest.approx(0.04 + (0.01 - 0.004) / 3)


def test_no_paper_key_keeps_the_plain_summary_and_report_options(tmp_path: Path) -> None:
    recs = [_record(0, "base", ELECTRONICS, 0.86), _record(1, "din", ELECTRONICS, 0.88)]
    for rec in recs:
        del rec["config"]["paper"]
        write_result(tmp_path / str(rec["job_num"]), rec)
    render(tmp_path, console=Console(file=io.StringIO()))
    plain = _csv(tmp_path)
    assert [line["model"] for line in plain] == ["base", "din"] and "paper_auc" not in plain[0]

    assert main(["report", str(tmp_path), "--paper", "din_table3"]) == 0  # a layout on request
    assert len(_csv(tmp_path)) == 14 and _csv(tmp_path)[12]["model"] == "din"
    assert main(["report", str(tmp_path), "--paper", "none"]) == 0
    assert "paper_auc" not in _csv(tmp_path)[0]
    assert main(["report", str(tmp_path), "--paper", "nope"]) == 2  # an unknown table: one line, nothing
