"""Registers ctrbench's Slurm launcher with Hydra; importing this module is the registration.

``conf/hydra/launcher/slurm.yaml`` names :data:`SLURM_TARGET`: Hydra 1.3 instantiates only plugins whose
``_target_`` starts with ``hydra_plugins.`` and finds them by that name in its registry (as for
ctrbench's sweepers, :mod:`ctrbench.sweeper.plugin`). Without hydra-submitit-launcher nothing is
registered (the command-line check names the package to install).
"""

from __future__ import annotations

import importlib.util

__all__ = ["SLURM_TARGET", "register"]

SLURM_TARGET = "hydra_plugins.ctrbench.SlurmLauncher"


def register() -> bool:
    """Enter :class:`~ctrbench.launcher.slurm_launcher.SlurmLauncher` under :data:`SLURM_TARGET`
    (idempotent); False when hydra-submitit-launcher or submitit is not installed."""
    try:
        if importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None:
            return False
        if importlib.util.find_spec("submitit") is None:
            return False
    except (ImportError, ValueError):
        return False
    from hydra.core.plugins import Plugins

    plugins = Plugins.instance()  # first: the plugin scan executes submitit_launcher's module again

    from ctrbench.launcher.slurm_launcher import SlurmLauncher

    plugins.register(SlurmLauncher)
    plugins.class_name_to_class[SLURM_TARGET] = SlurmLauncher
    return True


register()
