"""The committed reference results (results/reference/) are reproduced by the code as it is.

The smallest committed job (by its training time) is trained again from the config its record holds,
on the data it names, and must give the recorded test AUC, GAUC and logloss to 1e-6 — on the same
kind of machine: the CPU and the torch version of the record (float rounding differs elsewhere).
Every committed record is also checked for what makes it evidence: an ok status, its command, a clean
git state, the paper preset, and no checkpoint or prediction files beside it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import ROOT, SHARED_DATA
from omegaconf import OmegaConf

REFERENCE = ROOT / "results" / "reference"
RECORDS = sorted(REFERENCE.glob("*/*/*/result.json"))


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def test_reference_results_are_committed() -> None:
    assert RECORDS, f"no result.json under {REFERENCE}/<preset>/<variant>/<job>/"
    presets = {p.parts[-4] for p in RECORDS}
    assert {"din_table3", "dien_table2"} <= presets


@pytest.mark.parametrize("path", RECORDS, ids=lambda p: "/".join(p.parts[-4:-1]))
def test_every_reference_record_is_evidence(path: Path) -> None:
    record = _load(path)
    assert record["status"] == "ok"
    assert record["config"]["paper"] == path.parts[-4]
    assert record["provenance"]["command"].startswith("ctrbench -m +experiment=")
    assert record["provenance"]["git"]["dirty"] is False
    assert 0.0 <= record["test_auc"] <= 1.0  # a diverged run (the official SGD on ML-100K) is evidence too
    job = path.parent
    assert not (job / "checkpoints").exists() and not (job / "predictions.npz").exists()


def _data_root(config: dict) -> str | None:
    """This machine's copy of a real dataset a record names (``../shared/data/<folder>``)."""
    root = config["dataset"].get("root")
    if not root:
        return None
    return str(SHARED_DATA / Path(root).name)


def test_the_smallest_reference_job_reproduces_its_numbers(tmp_path) -> None:
    from ctrbench.engine.job import load_data, train
    from ctrbench.engine.provenance import data_fingerprint

    path = min(RECORDS, key=lambda p: _load(p)["train_time_s"])
    record = _load(path)
    made_on = record["provenance"]
    if made_on["device"] != "cpu" or made_on["torch"] != torch.__version__:
        pytest.skip(f"{path} was made with torch {made_on['torch']} on {made_on['device']}, not this torch")
    config = record["config"]
    root = _data_root(config)
    if root is not None:
        if not Path(root).is_dir():
            pytest.skip(f"{path} needs {root}, which is not here")
        config["dataset"]["root"] = root
    cfg = OmegaConf.create(config)
    assert data_fingerprint(load_data(cfg)) == record["fingerprint"]["data"], (
        "the data differs from the record's"
    )
    again = train(cfg, tmp_path)
    for metric in ("test_auc", "test_gauc", "test_logloss"):
        assert again[metric] == pytest.approx(record[metric], abs=1e-6), (path, metric)
    assert again["best_epoch"] == record["best_epoch"]
