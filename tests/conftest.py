"""Shared test helpers: running the real CLI in a subprocess and fake plugin distributions."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from ctrbench import registry

ROOT = Path(__file__).resolve().parents[1]
# Dataset caches built by the tests (the synthetic data is cached too) go to one folder of this session,
# shared by every test and the CLI subprocesses, never into the user's ~/.cache/ctrbench.
TEST_CACHE = tempfile.mkdtemp(prefix="ctrbench-test-cache-")
os.environ["CTRBENCH_CACHE"] = TEST_CACHE


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(TEST_CACHE, ignore_errors=True)


SHARED_DATA = ROOT.parent / "shared" / "data"
# Every model of the two papers' tables, in the papers' order.
PAPER_MODELS = [
    "lr",
    "base",
    "wide_deep",
    "pnn",
    "deepfm",
    "din",
    "gru_attention",
    "aigru",
    "agru",
    "augru",
    "dien",
]
# A few hundred rows, one epoch, no progress bar: jobs take about a second.
TINY = [
    "+experiment=smoke",
    "dataset.n_users=200",
    "dataset.n_items=300",
    "eval_batch_size=512",
    "logger=none",
]


def run_cli(args: list[str], cwd: Path, extra_path: Path | None = None, timeout: int = 300):
    """``python -m ctrbench ARGS`` in a subprocess; returns the CompletedProcess."""
    env = dict(os.environ, WANDB_MODE="disabled", HYDRA_FULL_ERROR="0", PYTHONWARNINGS="ignore")
    if extra_path is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(extra_path), env.get("PYTHONPATH", "")) if p)
    return subprocess.run(
        [sys.executable, "-m", "ctrbench", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def make_dist(
    root: Path, name: str, entry_points: str, modules: dict[str, str], version: str = "0.1"
) -> Path:
    """A fake installed distribution: ``<name>-<version>.dist-info`` plus its package, under root."""
    info = root / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    for rel, source in modules.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    return root


FAKE_MODEL = """
from dataclasses import dataclass

import torch
from torch import nn

from ctrbench.nn import EmbeddingBank, sum_pool


@dataclass
class Config:
    emb_dim: int = 4


class MeanModel(nn.Module):
    Config = Config

    def __init__(self, config, *, schema, activation):
        super().__init__()
        self.schema = schema
        self.emb = EmbeddingBank(schema, config.emb_dim)
        self.out = nn.Linear(config.emb_dim * (len(schema.categorical) + len(schema.behaviours)), 1)

    def forward(self, batch):
        parts = [self.emb(batch, f) for f in self.schema.categorical]
        parts += [sum_pool(self.emb(batch, f)) for f in self.schema.behaviours]
        return self.out(torch.cat(parts, 1)).squeeze(-1)
"""


@pytest.fixture
def raw_file(tmp_path: Path) -> Path:
    """A one-line raw file for dataset-cache tests (its sha256 is part of the cache key)."""
    path = tmp_path / "raw" / "ratings.txt"
    path.parent.mkdir()
    path.write_text("1 2 3\n")
    return path


@pytest.fixture
def fake_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A distribution 'fakeplugin' with a working model 'mean' and a model 'kaput' that fails to import."""
    root = make_dist(
        tmp_path / "site",
        "fakeplugin",
        """
        [ctrbench.models]
        mean = fakeplugin.mean:MeanModel
        kaput = fakeplugin.kaput:Kaput
        """,
        {
            "fakeplugin/__init__.py": "",
            "fakeplugin/mean.py": FAKE_MODEL,
            "fakeplugin/kaput.py": "raise ImportError('kaput needs a library that is not installed')\n",
        },
    )
    monkeypatch.syspath_prepend(str(root))
    registry.refresh()
    yield root
    registry.refresh()


@pytest.fixture
def compose_cfg():
    """Hydra's compose() over ctrbench's conf/ with every installed plugin registered."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from ctrbench.cli import conf_dir

    registry.register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(conf_dir())):
        yield lambda overrides=(): compose("config", overrides=list(overrides))
    GlobalHydra.instance().clear()
