"""A built wheel carries conf/ and the kernel sources, and composes outside the source tree."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT


@pytest.mark.skipif(
    importlib.util.find_spec("setuptools") is None, reason="building a wheel needs setuptools"
)
def test_wheel_composes_outside_source_tree(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    wheel = next(tmp_path.glob("ctrbench-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "ctrbench/conf/config.yaml" in names and "ctrbench/conf/trainer/default.yaml" in names
    assert "ctrbench/nn/kernels/recurrence.c" in names and "ctrbench/nn/kernels/prelu.c" in names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    env = dict(os.environ, PYTHONPATH=str(site))
    proc = subprocess.run(
        [sys.executable, "-m", "ctrbench", "--cfg", "job", "model=lr"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "name: lr" in proc.stdout and "max_epochs" in proc.stdout
    where = subprocess.run(
        [sys.executable, "-c", "import ctrbench.cli as c; print(c.conf_dir())"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert where.startswith(str(site))
