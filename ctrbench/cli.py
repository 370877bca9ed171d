"""The ``ctrbench`` command: a Hydra app plus the subcommands ``plugins``, ``report`` and ``compare``,
and ``--version``.

``ctrbench [overrides]`` / ``ctrbench -m ...`` behave as any Hydra app (``--cfg``, ``--help``,
``hydra.*``). Before Hydra composes, every installed plugin is registered as a config option and
plugin names given on the command line are checked, so a typo is one line listing the choices.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable, Sequence
from importlib.resources import files
from pathlib import Path

from ctrbench import registry


def conf_dir() -> Path:
    """``conf/`` of a source checkout (or editable install), else the copy inside the wheel."""
    source = Path(__file__).resolve().parents[1] / "conf"
    if (source / "config.yaml").is_file():
        return source
    return Path(str(files("ctrbench.conf")))


def yaml_options(group: str) -> set[str]:
    """Option names a config group offers as YAML files (ctrbench's conf/ and plugin config packages)."""
    found = {p.stem for p in (conf_dir() / group).glob("*.yaml")}
    for spec in registry.config_packages().values():
        try:
            folder = files(spec.value) / group
            if folder.is_dir():
                found |= {p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")}
        except (ModuleNotFoundError, TypeError):
            continue
    return found


def _override_values(arg: str) -> tuple[str, list[str]] | None:
    """(group, chosen names) for a plugin-group override such as ``model=lr,base``; else None."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        override = OverridesParser.create().parse_override(arg)
    except Exception:  # not ours to judge: Hydra reports malformed overrides itself
        return None
    group = override.key_or_group
    if group not in registry.KINDS or override.package is not None or override.is_delete():
        return None
    if override.is_sweep_override():
        if not override.is_choice_sweep():
            return None
        return group, list(override.sweep_string_iterator())
    value = override.value()
    return (group, [value]) if isinstance(value, str) else None


def normalize_override(arg: str) -> str:
    """``experiment=NAME`` → ``+experiment=NAME``: presets are appended to the defaults list, and both
    spellings are accepted (lightning-hydra-template users type the first, Hydra wants the second)."""
    return f"+{arg}" if arg.startswith("experiment=") else arg


def check_overrides(args: Sequence[str]) -> None:
    """Raise :class:`registry.UnknownPluginError` for a plugin name that is not installed."""
    __import__("ctrbench.engine.trainer_options", fromlist=["_"]).check_trainer_overrides(args)
    for arg in args:
        if arg.startswith("-") or "=" not in arg:
            continue
        parsed = _override_values(arg)
        if parsed is None:
            continue
        group, values = parsed
        allowed = set(registry.names(group)) | yaml_options(group)
        for value in values:
            if value not in allowed:
                raise registry.UnknownPluginError(
                    f"unknown {group} {value!r} (installed: {', '.join(sorted(allowed)) or 'none'})"
                )


def other_rank_args(args: Sequence[str]) -> list[str]:
    """The command line of a rank other than 0 in a multi-process job (the processes Lightning starts
    for ``trainer.devices=N``, or ``torchrun``/``srun`` tasks): rank 0 writes the job folder, so this
    one gets no ``.hydra/`` copy, logs to stdout instead of a log file there, and renders no summary."""
    given = {a.split("=", 1)[0].lstrip("+~") for a in args if not a.startswith("-")}
    extra = []
    if "hydra.output_subdir" not in given:
        extra.append("hydra.output_subdir=null")
    if "hydra/job_logging" not in given:
        extra.append("hydra/job_logging=stdout")
    if not given & {"hydra.callbacks", "hydra.callbacks.summary"}:
        extra.append("~hydra.callbacks.summary")
    return [*args, *extra]


def _register_search_path() -> None:
    """Append every ``ctrbench.configs`` package to Hydra's config search path."""
    from hydra.core.config_search_path import ConfigSearchPath
    from hydra.core.plugins import Plugins
    from hydra.plugins.search_path_plugin import SearchPathPlugin

    class PluginConfigs(SearchPathPlugin):
        def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
            for name, spec in registry.config_packages().items():
                search_path.append(provider=f"ctrbench-configs-{name}", path=f"pkg://{spec.value}")

    Plugins.instance().register(PluginConfigs)


def _fail(message: str, code: int = 2) -> int:
    print(f"ctrbench: error: {message}", file=sys.stderr)
    return code


def cmd_plugins(args: Sequence[str]) -> int:
    """``ctrbench plugins``: every installed plugin with its distribution and import status."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="ctrbench plugins")
    for col in ("kind", "name", "distribution", "version", "status"):
        table.add_column(col)
    for row in registry.plugin_rows():
        status = row["status"] if row["status"] == "ok" else f"[red]{row['status']}[/red]"
        table.add_row(row["kind"], row["name"], row["dist"], row["version"], status)
    Console(width=max(120, Console().width)).print(table)
    return 0


def cmd_report(args: Sequence[str]) -> int:
    """``ctrbench report DIR [--base MODEL] [--paper TABLE]``: re-render tables from any results folder."""
    import argparse

    from ctrbench.results import render
    from ctrbench.results.paper import TABLES

    parser = argparse.ArgumentParser(prog="ctrbench report", description=cmd_report.__doc__)
    parser.add_argument("folder", type=Path, help="a sweep or results folder holding result.json files")
    parser.add_argument("--base", default="base", help="model RelaImpr is measured against (default: base)")
    parser.add_argument("--against", default=None, help="row label or model the paired tests compare with")
    parser.add_argument("--bootstrap", type=int, default=1000, help="GAUC bootstrap resamples (default 1000)")
    parser.add_argument("--out", type=Path, default=None, help="where to write summary.* (default: folder)")
    parser.add_argument(
        "--paper",
        default=None,
        help=f"lay the tables out like a paper's table: {', '.join(TABLES)}, or none "
        "(default: the 'paper' key a preset put in the runs' config)",
    )
    ns = parser.parse_args(list(args))

    def warn(message: str) -> None:  # a skipped result.json: one line
        print(f"ctrbench: warning: {message}", file=sys.stderr)

    if not ns.folder.is_dir():
        return _fail(f"no such folder: {ns.folder}")
    if ns.paper is not None and ns.paper not in (*TABLES, "none"):
        return _fail(f"unknown paper table {ns.paper!r} (known: {', '.join(TABLES)}, none)")
    try:
        render(
            ns.folder,
            out_dir=ns.out,
            base_model=ns.base,
            paper=ns.paper,
            warn=warn,
            against=ns.against,
            n_boot=ns.bootstrap,
        )
    except ValueError as exc:
        return _fail(str(exc))
    except OSError as exc:  # a read-only folder: summary.* cannot be written there
        where = ns.out or ns.folder
        return _fail(
            f"cannot write the summary into {where}: {exc.strerror or exc}; choose a folder with --out DIR"
        )
    return 0


def cmd_compare(args: Sequence[str]) -> int:
    """``ctrbench compare DIR_A DIR_B [--out DIR] [--base MODEL]``: two sweeps in one table and report."""
    import argparse

    from ctrbench.results.compare import compare, default_out

    parser = argparse.ArgumentParser(prog="ctrbench compare", description=cmd_compare.__doc__)
    parser.add_argument("folder_a", type=Path, help="a sweep or results folder (e.g. the baselines)")
    parser.add_argument("folder_b", type=Path, help="another one (e.g. a new idea)")
    parser.add_argument("--base", default="base", help="model RelaImpr is measured against (default: base)")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where to write summary.* and report.html (default: ./compare-A-vs-B)",
    )
    ns = parser.parse_args(list(args))

    def warn(message: str) -> None:  # a skipped result.json: one line
        print(f"ctrbench: warning: {message}", file=sys.stderr)

    for folder in (ns.folder_a, ns.folder_b):
        if not folder.is_dir():
            return _fail(f"no such folder: {folder}")
    out = ns.out or default_out(ns.folder_a, ns.folder_b)
    try:
        compare(ns.folder_a, ns.folder_b, out_dir=out, base_model=ns.base, warn=warn)
    except ValueError as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(
            f"cannot write the comparison into {out}: {exc.strerror or exc}; choose a folder with --out DIR"
        )
    return 0


SUBCOMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "plugins": cmd_plugins,
    "report": cmd_report,
    "compare": cmd_compare,
}
_failed_runs: list[str] = []  # errors of single (non-sweep) runs in this process, for the exit code


def _task(cfg) -> float | None:
    """The Hydra task function: one job, always recorded; returns the selection metric."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from ctrbench.engine import interrupt
    from ctrbench.engine.job import record_failure, run
    from ctrbench.launcher import prepare_job

    interrupt.install()  # also in a launcher's worker process: SIGTERM/SIGINT record the job interrupted
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    where = {
        "out_dir": Path(hc.runtime.output_dir),
        "overrides": list(hc.overrides.task),
        "job_num": hc.job.num if multirun else None,
        "choices": {kind: hc.runtime.choices.get(kind) for kind in registry.KINDS},
    }
    try:
        prepare_job(cfg, hc)  # before anything touches CUDA: multi-device refusal, GPU slot (gpus launcher)
    except Exception as exc:  # no free slot, a launch refusal: this job fails, the sweep goes on
        record = record_failure(cfg, exc=exc, **where)
    else:
        record = run(cfg, **where)
    if record["status"] != "ok" and not multirun:
        _failed_runs.append(record["error"])
    value = record.get("best_val_gauc")
    return float("nan") if value is None else float(value)


def version_line() -> str:
    """``ctrbench <version>``: the installed distribution's version (``0.0.0`` in an uninstalled tree)."""
    from ctrbench import __version__

    return f"ctrbench {__version__}"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("--version", "-V"):  # before Hydra, which would read it as an override
        print(version_line())
        return 0
    if args and args[0] in SUBCOMMANDS:
        try:
            return SUBCOMMANDS[args[0]](args[1:])
        except registry.PluginError as exc:
            return _fail(str(exc))
    from ctrbench.launcher import LaunchError, check_args
    from ctrbench.output_dirs import OutputDirError, check_output_dirs

    args = [normalize_override(a) for a in args]
    from ctrbench.engine.distributed import launch_rank

    if launch_rank() != 0:
        args = other_rank_args(args)
    from ctrbench.engine.provenance import COMMAND_ENV

    os.environ[COMMAND_ENV] = shlex.join(["ctrbench", *args])  # recorded by every job, also in workers
    try:
        check_overrides(args)
        check_args(args)  # missing launcher/logger package, multi-device training under -m: one line
        check_output_dirs(args)  # an output folder that cannot be written: one line, before Hydra
        for problem in registry.register_configs():
            print(f"ctrbench: warning: {problem}", file=sys.stderr)
    except (registry.PluginError, LaunchError, OutputDirError) as exc:
        return _fail(str(exc))
    import ctrbench.launcher.hydra_launchers  # noqa: F401  registers the ray_gpus and slurm launcher classes
    import ctrbench.sweeper.plugin  # noqa: F401  registers hydra/sweeper=optuna (Hydra plugin + ConfigStore)

    _register_search_path()

    import hydra

    from ctrbench.engine import interrupt

    app = hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")(_task)
    sys.argv = [sys.argv[0] if sys.argv else "ctrbench", *args]
    _failed_runs.clear()
    try:
        with interrupt.handlers():
            app()
    except interrupt.JobInterrupted as exc:
        # the job's record (and a sweep's summary) are written; schedulers expect 128 + the signal
        return _fail(f"{exc}; what finished is recorded, re-run the command to resume", exc.exit_code)
    # A failed single run exits non-zero (its one-line error is already logged); a sweep exits 0
    # and reports failed jobs in its summary.
    return 1 if _failed_runs else 0
