"""An output folder that cannot be written is refused in one line before Hydra starts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import TINY, run_cli

from ctrbench.output_dirs import output_dirs


def test_the_folder_checked_is_the_part_before_interpolations() -> None:
    assert output_dirs([]) == {"hydra.run.dir": ("results/runs", "results/runs")}
    assert output_dirs(["-m"])["hydra.sweep.dir"][1] == "results/multirun"
    assert output_dirs(["hydra.run.dir=out/x_${now:%H}"])["hydra.run.dir"][1] == "out"
    assert output_dirs(["hydra.run.dir=out/${now:%H}/c"])["hydra.run.dir"][1] == "out"
    assert output_dirs(["-m", "hydra.sweep.dir=/a/b"])["hydra.sweep.dir"] == ("/a/b", "/a/b")


def _unwritable(tmp_path: Path) -> list[tuple[str, str]]:
    """Folders this process cannot write to: under a file; read-only by mode when not root."""
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    cases = [("under a file", str(blocker / "run"))]
    if os.geteuid() != 0:  # root writes through mode bits
        ro = tmp_path / "read-only"
        ro.mkdir(mode=0o500)
        cases.append(("read-only", str(ro / "run")))
    return cases


@pytest.mark.parametrize("multirun", [False, True], ids=["run", "sweep"])
def test_an_unwritable_output_folder_is_one_line(multirun: bool, tmp_path: Path) -> None:
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    for _, folder in _unwritable(tmp_path):
        result = run_cli([*(["-m"] if multirun else []), *TINY, f"{key}={folder}"], cwd=tmp_path)
        assert result.returncode == 2
        assert "Traceback" not in result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"ctrbench: error: {key}: {folder} cannot be written")


def test_printing_commands_are_not_checked(tmp_path: Path) -> None:
    result = run_cli([*TINY, "hydra.run.dir=/proc/ctrbench-nowhere", "--cfg", "job"], cwd=tmp_path)
    assert result.returncode == 0 and "model:" in result.stdout
