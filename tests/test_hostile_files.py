"""Files from elsewhere are data: a run folder's checkpoint, record and export never run code."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import ROOT, TINY

from ctrbench import export
from ctrbench.engine import job
from ctrbench.scoring import RunFileError, Scorer, config_from_record, load_checkpoint_state


class _Command:
    """Pickles as a call of ``os.system(command)``: what a hostile checkpoint would carry."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


@pytest.fixture(scope="module")
def good_run(tmp_path_factory) -> Path:
    """One finished DIN run with its checkpoint."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from ctrbench import registry
    from ctrbench.cli import conf_dir

    registry.register_configs()
    GlobalHydra.instance().clear()
    folder = tmp_path_factory.mktemp("good")
    with initialize_config_dir(version_base="1.3", config_dir=str(conf_dir())):
        cfg = compose("config", overrides=[*TINY, "model=din", "checkpoint=true"])
    GlobalHydra.instance().clear()
    assert job.run(cfg, folder)["status"] == "ok"
    return folder


@pytest.fixture
def hostile_run(good_run: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the good run whose checkpoint pickles ``os.system("touch MARKER")``; (run, marker)."""
    run = tmp_path / "run"
    shutil.copytree(good_run, run)
    marker = tmp_path / "MARKER"
    ckpt = run / "checkpoints" / "best.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    state["payload"] = _Command(f"touch {marker}")
    torch.save(state, ckpt)
    return run, marker


def _python(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONWARNINGS="ignore", PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


FROM_RUN = textwrap.dedent(
    """
    import sys
    from ctrbench.scoring import RunFileError, Scorer
    try:
        Scorer.from_run(sys.argv[1])
    except RunFileError as exc:
        sys.exit(f"error: {exc}")
    """
)


@pytest.mark.parametrize(
    "command",
    [
        ["-m", "ctrbench.export", "RUN"],
        ["-m", "ctrbench.figures", "attention", "RUN"],
        ["-c", FROM_RUN, "RUN"],
    ],
    ids=["export", "figures", "from_run"],
)
def test_a_pickled_command_in_a_checkpoint_never_runs(hostile_run, command: list[str]) -> None:
    run, marker = hostile_run
    proc = _python(*[str(run) if a == "RUN" else a for a in command], cwd=run.parent)
    assert not marker.exists(), "the checkpoint's pickled os.system ran"
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert str(run / "checkpoints" / "best.ckpt") in lines[0]
    assert "not a plain checkpoint" in lines[0] and "posix.system" in lines[0]
    assert not (run / "export").exists() and not (run / "figures").exists()


def test_damaged_or_foreign_checkpoints_are_one_line(tmp_path: Path) -> None:
    path = tmp_path / "best.ckpt"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(RunFileError, match=r"best.ckpt is not a plain checkpoint \(unreadable") as info:
        load_checkpoint_state(path)
    assert "\n" not in str(info.value)
    torch.save({"epoch": 1}, path)  # a plain file, but no weights
    with pytest.raises(RunFileError, match="holds no state_dict of tensors"):
        load_checkpoint_state(path)
    torch.save({"state_dict": {"w": torch.ones(2)}}, path)
    assert torch.equal(load_checkpoint_state(path)["w"], torch.ones(2))


def test_weights_of_another_model_are_one_line(good_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(good_run, run)
    ckpt = run / "checkpoints" / "best.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    name = next(iter(state["state_dict"]))
    del state["state_dict"][name]
    torch.save(state, ckpt)
    with pytest.raises(
        RunFileError, match=rf"do not fit the run's model \(1 missing, 0 unexpected, e.g. {name}\)"
    ):
        Scorer.from_run(run)


def test_a_moved_run_folder_loads_its_own_checkpoint(good_run: Path, tmp_path: Path) -> None:
    """The record names the checkpoint by its absolute path at training time; a copied folder whose
    original is gone (or was re-run) still loads the copy's own file."""
    original = tmp_path / "original"
    shutil.copytree(good_run, original)
    record = json.loads((original / "result.json").read_text())
    record["checkpoint"] = str(original / "checkpoints" / "best.ckpt")
    (original / "result.json").write_text(json.dumps(record))
    moved = tmp_path / "moved"
    shutil.copytree(original, moved)
    shutil.rmtree(original)
    scorer = Scorer.from_run(moved)
    assert scorer.config == record["config"]


def test_a_records_config_is_text_not_interpolations(monkeypatch) -> None:
    monkeypatch.setenv("CTRBENCH_TEST_SECRET", "synthetic")
    cfg = config_from_record({"dataset": {"name": "${oc.env:CTRBENCH_TEST_SECRET}", "n": 3}}, "x/result.json")
    assert cfg.dataset.name == "${oc.env:CTRBENCH_TEST_SECRET}" and cfg.dataset.n == 3
    with pytest.raises(RunFileError, match="x/result.json: its 'config' is not a JSON object"):
        config_from_record(["not", "a", "config"], "x/result.json")


def test_a_record_naming_a_plugin_not_installed_is_one_line(good_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(good_run, run)
    record = json.loads((run / "result.json").read_text())
    record["config"]["model"]["name"] = "someone_elses_model"
    (run / "result.json").write_text(json.dumps(record))
    with pytest.raises(
        RunFileError, match="its config cannot be built here: unknown model 'someone_elses_model'"
    ):
        Scorer.from_run(run)


def test_an_export_manifest_points_only_into_its_folder(good_run: Path, tmp_path: Path) -> None:
    folder = export.export_run(good_run, tmp_path / "exp", candidates=8)
    manifest = json.loads((folder / export.MANIFEST).read_text())
    (tmp_path / "elsewhere.pt").write_bytes((folder / export.MODULE).read_bytes())
    manifest["module"] = "../elsewhere.pt"
    (folder / export.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"'module' must name a file in .*exp, not '../elsewhere.pt'"):
        export.ExportedScorer.load(folder)
    (folder / export.MANIFEST).write_text("[1, 2]")
    with pytest.raises(ValueError, match="format 'list' is not"):
        export.ExportedScorer.load(folder)
    (folder / export.MANIFEST).write_text("{not json")
    with pytest.raises(ValueError, match="not a readable JSON manifest"):
        export.ExportedScorer.load(folder)


def test_resume_treats_a_hostile_checkpoint_as_unreadable(hostile_run) -> None:
    """Re-running a job whose folder holds such a checkpoint retrains it (never a crash, never the code)."""
    from ctrbench.engine.selection import CheckpointError, verify_checkpoint

    run, marker = hostile_run
    ckpt = run / "checkpoints" / "best.ckpt"
    epoch = json.loads((run / "result.json").read_text())["best_epoch"]
    with pytest.raises(CheckpointError, match=f"checkpoint {ckpt} is incomplete or unreadable"):
        verify_checkpoint(ckpt, int(epoch))
    assert not marker.exists()
