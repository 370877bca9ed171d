"""Registers ctrbench's Optuna sweeper with Hydra; importing this module is the registration.

``ctrbench.cli.main`` imports it before Hydra composes, in every process that composes a config (the
``ctrbench`` process; tests using ``compose()`` call :func:`register`). Launcher workers need nothing:
they receive the composed config, and the ConfigStore travels with Hydra's singleton state.
"""

from __future__ import annotations

from ctrbench.sweeper.config import HYDRA_TARGET, OptunaSweeperConf

__all__ = ["register"]


def register() -> None:
    """Make ``hydra/sweeper=optuna`` a config option backed by :class:`OptunaSweeper` (idempotent).

    - ``Plugins.instance().register(OptunaSweeper)``, plus the same class under ``HYDRA_TARGET``: Hydra
      1.3 only instantiates plugins whose ``_target_`` starts with ``hydra_plugins.`` and finds them by
      that name in its registry, and ctrbench ships no ``hydra_plugins`` namespace package;
    - a ConfigStore node ``hydra/sweeper/optuna`` holding :class:`OptunaSweeperConf` (no YAML file has
      that group and name: a YAML option would silently win over the node).
    """
    from hydra.core.config_store import ConfigStore
    from hydra.core.plugins import Plugins

    from ctrbench.sweeper.optuna_sweeper import OptunaSweeper

    plugins = Plugins.instance()
    plugins.register(OptunaSweeper)
    plugins.class_name_to_class[HYDRA_TARGET] = OptunaSweeper
    ConfigStore.instance().store(
        group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="ctrbench"
    )


register()
