"""Resume compares what produced a record: the data (raw files fixed in place), the code (ctrbench's
and the plugins' distributions and sources) and the device, not only the config."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY

from ctrbench.engine import job, provenance


def _write_events(path: Path, flip: bool = False) -> Path:
    rng = np.random.default_rng(0)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["user", "item", "category", "label", "timestamp"])
        t = 1_700_000_000
        for u in range(40):
            for i in rng.choice(30, size=10, replace=False):
                label = int(rng.random() < 0.4)
                w.writerow([f"u{u}", f"i{i}", f"c{i % 4}", 1 - label if flip and u == 0 else label, t])
                t += 7
    return path


def _events_cfg(compose_cfg, csv_path: Path, cache: Path):
    return compose_cfg(
        [
            "dataset=events",
            f"dataset.root={csv_path}",
            f"dataset.cache_dir={cache}",
            "model=base",
            "trainer.max_epochs=1",
            "trainer.enable_progress_bar=false",
            "checkpoint=false",
            "logger=none",
        ]
    )


def test_resume_reruns_when_the_raw_data_changed_in_place(
    compose_cfg, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    raw = _write_events(tmp_path / "clicks.csv")
    cfg = _events_cfg(compose_cfg, raw, tmp_path / "cache")
    out = tmp_path / "job"
    first = job.run(cfg, out)
    assert first["status"] == "ok", first.get("error")
    assert job.run(cfg, out)["started_at"] == first["started_at"]  # unchanged: skipped

    _write_events(raw, flip=True)  # a label fixed in the same file, same config
    job._DATA_CACHE.clear()
    with caplog.at_level("INFO", logger="ctrbench"):
        second = job.run(cfg, out)
    assert second["status"] == "ok"
    assert second["fingerprint"]["data"] != first["fingerprint"]["data"]
    assert second["fingerprint"]["code"] == first["fingerprint"]["code"]
    assert any("the data changed" in r.getMessage() for r in caplog.records)
    assert second["epochs"] != first["epochs"]  # trained again on the fixed data


def test_resume_reruns_when_the_code_changed(
    compose_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = compose_cfg([*TINY, "model=lr"])
    first = job.run(cfg, tmp_path)
    assert set(first["fingerprint"]["code"]) >= {"ctrbench", "torch", "pytorch-lightning"}
    assert "+src." in first["fingerprint"]["code"]["ctrbench"]  # the source is hashed, not only the version
    real = provenance.code_versions
    monkeypatch.setattr(
        provenance, "code_versions", lambda plugins: {**real(plugins), "ctrbench": "0.2.0+src.000000000000"}
    )
    monkeypatch.setattr(job, "fingerprint", provenance.fingerprint)
    with caplog.at_level("INFO", logger="ctrbench"):
        second = job.run(cfg, tmp_path)
    assert second["started_at"] >= first["started_at"] and second["fingerprint"]["code"]["ctrbench"] == (
        "0.2.0+src.000000000000"
    )
    assert any("the code changed (ctrbench" in r.getMessage() for r in caplog.records)


def test_a_record_without_fingerprint_is_not_resumed_over(compose_cfg, tmp_path: Path) -> None:
    import json

    cfg = compose_cfg([*TINY, "model=lr"])
    first = job.run(cfg, tmp_path)
    old = dict(first)
    del old["fingerprint"]
    (tmp_path / "result.json").write_text(json.dumps(old))
    previous, why = job.finished_record(tmp_path, cfg, first["fingerprint"])
    assert previous is None and "no fingerprint" in why


def test_source_hash_follows_the_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "somepkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = provenance.source_hash.__wrapped__("somepkg")
    (pkg / "README.txt").write_text("docs do not count")
    assert provenance.source_hash.__wrapped__("somepkg") == before
    (pkg / "__init__.py").write_text("X = 2\n")
    assert provenance.source_hash.__wrapped__("somepkg") != before


def test_data_fingerprint_of_arrays_changes_with_a_value(compose_cfg) -> None:
    import dataclasses

    data = job.load_data(compose_cfg([*TINY, "model=lr"]))
    plain = dataclasses.replace(data, info={})
    first = provenance.data_fingerprint(plain)
    columns = {k: np.array(v) for k, v in data.test.columns.items()}
    columns[data.schema.label][0] = 1 - columns[data.schema.label][0]
    changed = dataclasses.replace(data, test=dataclasses.replace(data.test, columns=columns), info={})
    assert provenance.data_fingerprint(changed) != first
    assert provenance.data_fingerprint(dataclasses.replace(data, info={})) == first


def test_a_record_says_how_to_reproduce_it(tmp_path: Path) -> None:
    """The command as typed (also from a launcher's worker), versions, machine, threads, git state;
    a sweep folder gets the environment's package list once."""
    import json

    from conftest import run_cli

    sweep = tmp_path / "sweep"
    args = [
        "-m",
        *TINY,
        "model=lr",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=1",
        f"hydra.sweep.dir={sweep}",
    ]
    result = run_cli(args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads((sweep / "0" / "result.json").read_text())
    prov = record["provenance"]
    assert prov["command"].startswith("ctrbench -m ") and f"hydra.sweep.dir={sweep}" in prov["command"]
    assert prov["python"].count(".") == 2 and prov["torch"] and prov["pytorch-lightning"]
    assert prov["device"] == "cpu" and prov["cpu"] and isinstance(prov["threads"], int)
    if (Path(__file__).resolve().parents[1] / ".git").exists():
        assert len(prov["git"]["commit"]) == 40 and isinstance(prov["git"]["dirty"], bool)
    env = (sweep / "environment.txt").read_text().splitlines()
    names = [line.split("==")[0].lower() for line in env]
    assert "torch" in names and names == sorted(names)
    again = run_cli(args, cwd=tmp_path)
    assert again.returncode == 0
    assert sorted(p.name for p in sweep.glob("environment*.txt")) == ["environment.txt"]  # same environment


def test_a_checkout_is_dirty_for_code_not_for_results(tmp_path: Path) -> None:
    """Re-running a committed reference sweep in place rewrites tracked files under results/: the
    record still names a clean commit; a changed source file makes it dirty, with the diff's hash."""
    import subprocess

    from ctrbench.engine.provenance import checkout_state

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "results" / "reference").mkdir(parents=True)
    (tmp_path / "results" / "reference" / "result.json").write_text("{}\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    clean = checkout_state(tmp_path)
    assert clean is not None and len(clean["commit"]) == 40 and clean["dirty"] is False
    (tmp_path / "results" / "reference" / "result.json").write_text('{"status": "ok"}\n')
    assert checkout_state(tmp_path) == clean
    (tmp_path / "code.py").write_text("x = 2\n")
    changed = checkout_state(tmp_path)
    assert changed["dirty"] is True and changed["diff_sha256"] and changed["commit"] == clean["commit"]
