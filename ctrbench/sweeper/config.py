"""The options of ``hydra/sweeper=optuna`` (a ConfigStore schema; no YAML file shares its name)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["BASIC_TARGET", "HYDRA_TARGET", "OptunaSweeperConf"]

# Hydra 1.3 instantiates a plugin only when its ``_target_`` starts with ``hydra_plugins.``
# (``Plugins.is_in_toplevel_plugins_module``), and then looks the class up by that name in its
# registry instead of importing it. ctrbench has no ``hydra_plugins`` package: ``plugin.register()``
# enters :class:`~ctrbench.sweeper.optuna_sweeper.OptunaSweeper` under this name.
HYDRA_TARGET = "hydra_plugins.ctrbench.OptunaSweeper"
# :class:`~ctrbench.sweeper.basic.BasicSweeper`, the ``_target_`` of ``conf/hydra/sweeper/basic.yaml``
BASIC_TARGET = "hydra_plugins.ctrbench.BasicSweeper"


@dataclass
class OptunaSweeperConf:
    """``hydra.sweeper.*`` for ctrbench's Optuna sweeper; see :class:`OptunaSweeper` for the semantics."""

    _target_: str = HYDRA_TARGET
    n_trials: int = 20  # trials this process runs (several processes may share one study)
    n_jobs: int = 1  # trials asked per batch and launched together by hydra/launcher
    sampler: str = "tpe"  # tpe | random
    seed: int | None = None  # sampler seed; give each worker process its own (or none)
    direction: str = "maximize"  # maximize | minimize
    metric: str = "val_gauc"  # a per-epoch key of result.json "epochs"; objective = its best epoch
    study_name: str | None = None  # null: optuna picks one (printed); name it to share a study
    storage: str | None = None  # null (in memory) | sqlite:///x.db | any RDB URL | x.log (journal file)
    pruner: str = "median"  # median | none
    n_startup_trials: int = 5  # median pruner: complete trials needed before it prunes
    n_warmup_steps: int = 0  # median pruner: epochs never pruned
    enqueue: list[Any] = field(default_factory=list)  # [{param: value, ...}, ...] run first
    params: dict[str, Any] = field(default_factory=dict)  # search space: {key: "tag(log, interval(a, b))"}
