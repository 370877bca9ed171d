"""Registers ctrbench's launcher classes with Hydra; importing this module is the registration.

``conf/hydra/launcher/ray_gpus.yaml`` and ``slurm.yaml`` name ``hydra_plugins.ctrbench.<Class>``: Hydra 1.3
instantiates only plugins whose ``_target_`` starts with ``hydra_plugins.`` and finds them by that name in
its registry (as for ctrbench's sweepers, :mod:`ctrbench.sweeper.plugin`). A launcher whose packages are not
installed is not registered (the command-line check names the package to install); Ray and submitit are
imported only here, when their launcher plugin is present, and Ray's own runtime only when a sweep launches.
"""

from __future__ import annotations

import importlib

from ctrbench.launcher.checks import requirement_problem

__all__ = ["LAUNCHERS", "RAY_TARGET", "SLURM_TARGET", "register", "register_all"]

RAY_TARGET = "hydra_plugins.ctrbench.RayLauncher"
SLURM_TARGET = "hydra_plugins.ctrbench.SlurmLauncher"
# target -> (module.Class of ctrbench's launcher, the hydra/launcher option whose packages it needs)
LAUNCHERS: dict[str, tuple[str, str]] = {
    RAY_TARGET: ("ctrbench.launcher.ray_launcher.RayLauncher", "ray_gpus"),
    SLURM_TARGET: ("ctrbench.launcher.slurm_launcher.SlurmLauncher", "slurm"),
}


def register(target: str) -> bool:
    """Enter the launcher class of ``target`` in Hydra's registry (idempotent); False when its packages
    are not installed."""
    path, option = LAUNCHERS[target]
    if requirement_problem("hydra/launcher", option) is not None:  # the check the command line runs
        return False
    from hydra.core.plugins import Plugins

    plugins = Plugins.instance()  # first: the plugin scan executes the extended launcher's module again
    module, name = path.rsplit(".", 1)
    launcher = getattr(importlib.import_module(module), name)
    plugins.register(launcher)
    plugins.class_name_to_class[target] = launcher
    return True


def register_all() -> dict[str, bool]:
    """Every launcher of :data:`LAUNCHERS`: ``{target: registered}``."""
    return {target: register(target) for target in LAUNCHERS}


register_all()
