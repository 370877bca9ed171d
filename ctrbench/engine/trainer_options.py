"""The ``trainer`` group: every ``pytorch_lightning.Trainer`` argument is settable as ``trainer.NAME=VALUE``.

The group's node is left open (a ConfigStore node with OmegaConf's struct flag off, merged first by
``conf/trainer/default.yaml``), so any Trainer argument composes without Hydra's ``+`` prefix and the
config names only what is set: ctrbench's defaults in ``conf/trainer/default.yaml`` plus the overrides.
An open node would also take a misspelt key silently, so :func:`check_trainer_overrides` checks every
``trainer.NAME`` of the command line against the signature of ``pytorch_lightning.Trainer.__init__``
before Hydra composes: an unknown name is one line naming the close matches.

Importing this module registers the open node (as importing :mod:`ctrbench.sweeper.plugin` registers
the sweepers); ``ctrbench.cli`` does so before Hydra composes.
"""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Sequence

from ctrbench.launcher import LaunchError

__all__ = [
    "SET_BY_CTRBENCH",
    "TrainerOptionError",
    "check_trainer_overrides",
    "register",
    "trainer_arguments",
]

GROUP = "trainer"
# ConfigStore node ``trainer_schema/open``: the open base of conf/trainer/default.yaml
SCHEMA_GROUP, SCHEMA_NAME = "trainer_schema", "open"
# Trainer arguments a job passes itself, and what to set instead
SET_BY_CTRBENCH = {
    "callbacks": "ctrbench adds its checkpoint, progress bar and pruning callbacks itself",
    "logger": "choose one with logger=csv|tensorboard|wandb|none",
    "default_root_dir": "it is the job folder (hydra.run.dir / hydra.sweep.dir)",
    "enable_checkpointing": "use checkpoint=true|false (ctrbench keeps the best validation epoch)",
}


class TrainerOptionError(LaunchError, ValueError):
    """A ``trainer.NAME=`` override that pytorch_lightning.Trainer does not take; one line."""


@functools.cache
def trainer_arguments() -> tuple[str, ...]:
    """The keyword arguments of the installed ``pytorch_lightning.Trainer``, in signature order."""
    import pytorch_lightning as pl

    params = inspect.signature(pl.Trainer.__init__).parameters.values()
    keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return tuple(p.name for p in params if p.name != "self" and p.kind in keyword)


def _trainer_key(arg: str) -> str | None:
    """``NAME`` of a ``trainer.NAME...`` override (``+``, ``++`` and ``~`` forms too); else None."""
    if arg.startswith("-"):
        return None
    key = arg.split("=", 1)[0].lstrip("+~")
    if "@" in key or not key.startswith(f"{GROUP}."):  # trainer@pkg=... is a group choice, not a key
        return None
    return key.split(".")[1] or None


def check_trainer_overrides(args: Sequence[str]) -> None:
    """Raise :class:`TrainerOptionError` for a ``trainer.NAME=VALUE`` whose ``NAME`` is not an argument
    of ``pytorch_lightning.Trainer`` (naming the close matches) or is one ctrbench sets itself."""
    for arg in args:
        name = _trainer_key(arg)
        if name is None:
            continue
        if name in SET_BY_CTRBENCH:
            raise TrainerOptionError(f"{GROUP}.{name} is set by ctrbench: {SET_BY_CTRBENCH[name]}")
        known = trainer_arguments()
        if name in known:
            continue
        close = difflib.get_close_matches(
            name, [n for n in known if n not in SET_BY_CTRBENCH], n=4, cutoff=0.6
        )
        hint = f"did you mean: {', '.join(close)}?" if close else "see pytorch_lightning.Trainer's arguments"
        raise TrainerOptionError(f"unknown Trainer argument {name!r} in {arg!r} ({hint})")


def register() -> None:
    """Store the open ``trainer_schema/open`` node (idempotent)."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    node = OmegaConf.create({})
    OmegaConf.set_struct(node, False)  # stays open after Hydra closes the composed config
    ConfigStore.instance().store(group=SCHEMA_GROUP, name=SCHEMA_NAME, node=node, provider="ctrbench")


register()
