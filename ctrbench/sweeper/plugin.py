"""Registers ctrbench's sweepers with Hydra; importing this module is the registration.

``ctrbench.cli.main`` imports it before Hydra composes, in every process that composes a config (the
``ctrbench`` process; tests using ``compose()`` call :func:`register`). Launcher workers need nothing:
they receive the composed config, and the ConfigStore travels with Hydra's singleton state.
"""

from __future__ import annotations

from ctrbench.sweeper.config import BASIC_TARGET, HYDRA_TARGET, OptunaSweeperConf

__all__ = ["register"]


def register() -> None:
    """Make ``hydra/sweeper=optuna`` a config option backed by :class:`OptunaSweeper`, and
    ``hydra/sweeper=basic`` (Hydra's default sweeper) ctrbench's duplicate-free
    :class:`~ctrbench.sweeper.basic.BasicSweeper` (idempotent).

    - ``Plugins.instance().register(OptunaSweeper)``, plus the same class under ``HYDRA_TARGET``: Hydra
      1.3 only instantiates plugins whose ``_target_`` starts with ``hydra_plugins.`` and finds them by
      that name in its registry, and ctrbench ships no ``hydra_plugins`` namespace package (the basic
      sweeper likewise, under ``BASIC_TARGET``);
    - a ConfigStore node ``hydra/sweeper/optuna`` holding :class:`OptunaSweeperConf` (no YAML file has
      that group and name: a YAML option would silently win over the node, and Hydra would also
      validate it against the node);
    - the ConfigStore node ``hydra/sweeper/basic`` replaced by
      :class:`~ctrbench.sweeper.basic.BasicSweeperConf`, after ``Plugins.instance()`` has run Hydra's
      plugin scan (which executes Hydra's basic sweeper module, storing Hydra's node, once per process).
    """
    from hydra.core.config_store import ConfigStore
    from hydra.core.plugins import Plugins

    plugins = Plugins.instance()  # first: Hydra's plugin scan stores Hydra's own basic node

    from ctrbench.sweeper.basic import BasicSweeper, BasicSweeperConf
    from ctrbench.sweeper.optuna_sweeper import OptunaSweeper

    plugins.register(OptunaSweeper)
    plugins.class_name_to_class[HYDRA_TARGET] = OptunaSweeper
    plugins.register(BasicSweeper)
    plugins.class_name_to_class[BASIC_TARGET] = BasicSweeper
    ConfigStore.instance().store(
        group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="ctrbench"
    )
    ConfigStore.instance().store(
        group="hydra/sweeper", name="basic", node=BasicSweeperConf, provider="ctrbench"
    )


register()
