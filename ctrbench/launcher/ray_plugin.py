"""Registers ctrbench's Ray launcher with Hydra; importing this module is the registration.

``conf/hydra/launcher/ray_gpus.yaml`` names :data:`RAY_TARGET`: Hydra 1.3 instantiates only plugins whose
``_target_`` starts with ``hydra_plugins.`` and finds them by that name in its registry (as for
ctrbench's sweepers, :mod:`ctrbench.sweeper.plugin`). Without hydra-ray-launcher (or Ray) nothing is
registered (the command-line check names the package to install).
"""

from __future__ import annotations

import importlib.util

__all__ = ["RAY_TARGET", "register"]

RAY_TARGET = "hydra_plugins.ctrbench.RayLauncher"


def register() -> bool:
    """Enter :class:`~ctrbench.launcher.ray_launcher.RayLauncher` under :data:`RAY_TARGET` (idempotent);
    False when hydra-ray-launcher or Ray is not installed. Ray itself is imported only when a sweep
    launches."""
    try:
        if importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is None:
            return False
        if importlib.util.find_spec("ray") is None:
            return False
    except (ImportError, ValueError):
        return False
    from hydra.core.plugins import Plugins

    plugins = Plugins.instance()  # first: the plugin scan executes the ray launcher's module again

    from ctrbench.launcher.ray_launcher import RayLauncher

    plugins.register(RayLauncher)
    plugins.class_name_to_class[RAY_TARGET] = RayLauncher
    return True


register()
