"""Refuse, in one line and before anything runs, an output folder that cannot be written.

Hydra creates ``hydra.run.dir`` / ``hydra.sweep.dir`` itself and reports a failure with a traceback
of several frames; ctrbench checks the folder the command line names (the part before the first
``${...}``, e.g. the timestamp of the default ``results/runs/${now:...}``) first: it is created as
Hydra would create it, and a file is written and removed in it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

DEFAULTS = {"hydra.run.dir": "results/runs", "hydra.sweep.dir": "results/multirun"}


class OutputDirError(ValueError):
    """The output folder of the command cannot be written."""


def _static_prefix(value: str) -> str:
    """The folder a path names before its first interpolation (``results/x_${now:%H}`` → ``results``)."""
    if "${" not in value:
        return value
    head = value.split("${", 1)[0]
    return head.rstrip("/" + os.sep) if head.endswith(("/", os.sep)) else str(Path(head).parent)


def output_dirs(args: Sequence[str]) -> dict[str, tuple[str, str]]:
    """``{key: (value given, folder to check)}``: the run folder, or the sweep folder under ``-m``."""
    multirun = any(a in ("-m", "--multirun") for a in args)
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    chosen = DEFAULTS[key]
    for arg in args:
        name, _, value = arg.lstrip("+").partition("=")
        if name == key and value:
            chosen = value.strip("'\"")
    return {key: (chosen, _static_prefix(chosen) or ".")}


def check_output_dirs(args: Sequence[str]) -> None:
    """Raise :class:`OutputDirError` naming the option, the folder and the reason. Commands that
    only print (``--help``, ``--cfg``, ``--info``, ...) are not checked."""
    if any(a.startswith("-") and a not in ("-m", "--multirun") for a in args):
        return
    for key, (given, folder) in output_dirs(args).items():
        path = Path(folder).expanduser()
        try:
            path.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".ctrbench-write-check-", dir=path)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            reason = "a file is in the way" if isinstance(exc, FileExistsError) else exc.strerror or str(exc)
            where = folder if folder == given else f"{folder} (of {given})"
            raise OutputDirError(
                f"{key}: {where} cannot be written ({reason}); choose a writable folder, "
                f"e.g. {key}=/tmp/ctrbench"
            ) from None
