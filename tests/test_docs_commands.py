"""Every ``ctrbench`` command line shown in README.md and docs/ parses against the current code and configs.

A command is a line of a ```` ```bash ```` block (``\\`` continuations joined, trailing ``# comments``
stripped) whose first word, after ``VAR=value`` assignments and a ``srun``/``torchrun ... -m`` in front,
is ``ctrbench``. Placeholders follow one explicit rule each: ``<…>`` and ``$VAR`` are filled in
(:data:`PLACEHOLDER_RULES`), a bare ``...`` and a trailing ``&`` are dropped (:data:`DROPPED_TOKENS`).

Not checked here, on purpose: lines of other programs (``python -m ctrbench.figures``/``.export``,
``python benchmarks/...``, ``pip``, ``ray``, ``scripts/local-slurm``), and commands in prose or in
```` ```text ```` blocks (e.g. the error output of ``ctrbench model=nope``). With the rules above no
``ctrbench`` line of a ```` ```bash ```` block needs skipping.

Hydra command lines go through what ``ctrbench`` checks before Hydra starts (plugin names, trainer
options, launcher requirements) and then through Hydra's compose API with the Hydra config included;
under ``-m`` every sweep override contributes its first value. Subcommands go through their own
argument parser.
"""

from __future__ import annotations

import importlib.metadata
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
import tomllib
from conftest import ROOT, make_dist

from ctrbench import registry

DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

# How a placeholder becomes something checkable, applied to the joined command line in this order.
PLACEHOLDER_RULES: list[tuple[str, str, str]] = [
    # (pattern, replacement, why)
    (r"<[^<>]*>", "placeholder", "`<stamp>`, `<ml-100k folder>`: a folder name the reader fills in"),
    (r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?", "1", "`$SLURM_JOB_ID`: a value the shell fills in"),
]
# Tokens dropped after splitting: `...` = "more overrides of your own"; `&` runs the command in background.
DROPPED_TOKENS = {"...", "&"}
# Programs that start the ctrbench command on each node or rank: their ctrbench part is checked.
LAUNCHERS = {"srun", "torchrun"}
# Hydra flags that print instead of running: they take no part in composition.
PRINT_FLAGS = {"--help", "-h", "--hydra-help", "--info"}


@dataclass
class Command:
    where: str  # file:line
    text: str  # the joined line as shown
    env: dict[str, str]
    args: list[str]  # after `ctrbench`

    @property
    def id(self) -> str:
        return f"{self.where} ctrbench {' '.join(self.args)}"[:120]


def bash_blocks(text: str) -> list[tuple[int, list[str]]]:
    """(line number of the first line, lines) of every ```bash block, indented ones (in lists) included."""
    blocks, current, start, indent = [], None, 0, ""
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if current is None:
            if stripped == "```bash":
                current, start, indent = [], number + 1, line[: len(line) - len(line.lstrip())]
        elif stripped.startswith("```"):
            blocks.append((start, current))
            current = None
        else:
            current.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
    return blocks


def logical_lines(first: int, lines: list[str]) -> list[tuple[int, str]]:
    """Lines with ``\\`` continuations joined, each with the number of its first line."""
    out, buffer, start = [], "", first
    for offset, line in enumerate(lines):
        if not buffer:
            start = first + offset
        if line.rstrip().endswith("\\"):
            buffer += line.rstrip()[:-1] + " "
            continue
        out.append((start, buffer + line))
        buffer = ""
    if buffer:
        out.append((start, buffer))
    return out


def to_command(where: str, line: str) -> Command | None:
    """The ctrbench command of a shell line, or None when the line runs something else."""
    text = line.strip()
    for pattern, replacement, _ in PLACEHOLDER_RULES:
        text = re.sub(pattern, replacement, text)
    tokens = shlex.split(text, comments=True)
    env: dict[str, str] = {}
    while tokens and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", tokens[0]):
        key, value = tokens.pop(0).split("=", 1)
        env[key] = value
    if tokens and tokens[0] in LAUNCHERS:  # `srun ctrbench ...`, `torchrun ... -m ctrbench ...`
        rest = tokens[1:]
        at = [i for i, t in enumerate(rest) if t == "ctrbench" and (i == 0 or rest[i - 1] == "-m")]
        tokens = rest[at[0] :] if at else []
    if not tokens or tokens[0] != "ctrbench":
        return None  # another program (`python -m ctrbench.export`, `pip`, `ray start`): not checked here
    args = []
    for token in tokens[1:]:
        if token in ("&&", ";", "|", "||"):
            break
        if token not in DROPPED_TOKENS:
            args.append(token)
    return Command(where, line.strip(), env, args)


def doc_commands() -> list[Command]:
    commands = []
    for path in DOC_FILES:
        rel = path.relative_to(ROOT)
        for first, lines in bash_blocks(path.read_text()):
            for number, line in logical_lines(first, lines):
                command = to_command(f"{rel}:{number}", line)
                if command is not None:
                    commands.append(command)
    return commands


COMMANDS = doc_commands()
VERSION_FLAGS = ("--version", "-V")  # answered by the CLI before Hydra
HYDRA = [
    c for c in COMMANDS if not c.args or c.args[0] not in ("plugins", "report", "compare", *VERSION_FLAGS)
]
SUBCOMMAND = [c for c in COMMANDS if c.args and c.args[0] in ("plugins", "report", "compare")]
VERSION = [c for c in COMMANDS if c.args and c.args[0] in VERSION_FLAGS]


# --- the rules themselves -----------------------------------------------------------------------------


def test_extraction_rules_on_a_hand_written_block() -> None:
    text = "\n".join(
        [
            "```bash",
            "OMP_NUM_THREADS=1 ctrbench -m model=lr,base \\",
            "    seed=1,2 ...      # a comment",
            "ctrbench report results/multirun/<stamp> --paper din_table3",
            "srun ctrbench hydra.run.dir=/runs/$SLURM_JOB_ID",
            "python -m ctrbench.export RUN",
            "```",
        ]
    )
    found = [
        to_command(f"x:{n}", line)
        for first, lines in bash_blocks(text)
        for n, line in logical_lines(first, lines)
    ]
    assert [c.args if c else None for c in found] == [
        ["-m", "model=lr,base", "seed=1,2"],
        ["report", "results/multirun/placeholder", "--paper", "din_table3"],
        ["hydra.run.dir=/runs/1"],  # srun's ctrbench part, $SLURM_JOB_ID filled in
        None,  # python -m ctrbench.export: another program
    ]
    assert found[0].env == {"OMP_NUM_THREADS": "1"} and found[0].where == "x:2"


def test_the_docs_show_commands_of_every_kind() -> None:
    """The extraction finds the docs' commands (a broken extractor would make every other test vacuous)."""
    assert len(HYDRA) >= 40, len(HYDRA)
    assert {c.args[0] for c in SUBCOMMAND} == {"plugins", "report", "compare"}
    assert any("-m" in c.args for c in HYDRA)
    assert any(c.where.startswith("README.md") for c in COMMANDS)


# --- Hydra command lines ----------------------------------------------------------------------------------


def _plugin_packages() -> dict[str, Path]:
    """Entry-point names offered by the plugin packages in plugins/ (not installed in every checkout)."""
    offered = {}
    for pyproject in sorted((ROOT / "plugins").glob("*/pyproject.toml")):
        groups = tomllib.loads(pyproject.read_text())["project"].get("entry-points", {})
        for names in groups.values():
            for name in names:
                offered[name] = pyproject.parent
    return offered


@pytest.fixture(scope="module")
def plugin_packages(tmp_path_factory: pytest.TempPathFactory):
    """plugins/* made importable as installed distributions (their entry points), for commands using them."""
    import sys

    site = tmp_path_factory.mktemp("site")
    added = []
    for package in sorted({p for p in _plugin_packages().values()}):
        project = tomllib.loads((package / "pyproject.toml").read_text())["project"]
        if project["name"] in {d.metadata["Name"] for d in importlib.metadata.distributions()}:
            continue  # installed already (pip install -e plugins/...)
        lines = []
        for group, names in project.get("entry-points", {}).items():
            lines.append(f"[{group}]")
            lines += [f"{name} = {target}" for name, target in names.items()]
        name = project["name"].replace("-", "_")  # a dist-info folder is named <name>-<version>
        make_dist(site, name, "\n".join(lines) + "\n", {}, project.get("version", "0.1"))
        added.append(str(package))
    sys.path[:0] = [str(site), *added]
    registry.refresh()
    yield
    for path in [str(site), *added]:
        sys.path.remove(path)
    registry.refresh()


def first_values(args: list[str]) -> tuple[list[str], list[str]]:
    """(overrides for one job of the sweep, sweep-parameter keys to find in the job config).

    A choice or range sweep contributes its first value; an interval (Optuna) its lower bound; a
    ``hydra.sweeper.params.KEY=...`` search space is not composed, its KEY must exist in the job config.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import IntervalSweep

    parser = OverridesParser.create()
    overrides, search_keys = [], []
    for arg in args:
        override = parser.parse_override(arg)
        key = override.get_key_element()
        if override.key_or_group.startswith("hydra.sweeper.params."):
            search_keys.append(override.key_or_group.removeprefix("hydra.sweeper.params."))
            continue
        if not override.is_sweep_override():
            overrides.append(arg)
        elif isinstance(override.value(), IntervalSweep):
            overrides.append(f"{key}={override.value().start}")
        else:
            first = next(iter(override.sweep_string_iterator()))
            overrides.append(f"{key}={first}")
    return overrides, search_keys


@pytest.fixture(scope="module")
def compose_with_hydra(plugin_packages):
    """Hydra's compose() over ctrbench's conf/ as the ``ctrbench`` command sets it up (plugins, launchers,
    the Optuna sweeper, plugin config packages), with the Hydra config, so hydra.* overrides are checked."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import ctrbench.launcher.hydra_launchers  # noqa: F401  hydra/launcher=ray_gpus, slurm
    import ctrbench.sweeper.plugin  # noqa: F401  hydra/sweeper=optuna
    from ctrbench import cli

    registry.register_configs()
    cli._register_search_path()
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(cli.conf_dir())):
        yield lambda overrides: compose("config", overrides=list(overrides), return_hydra_config=True)
    GlobalHydra.instance().clear()


def _launch_checks(args: list[str], env: dict[str, str]) -> None:
    """ctrbench's launch checks on a CPU-only machine, else on a 2-GPU one (the docs show both)."""
    from ctrbench.launcher import LaunchError
    from ctrbench.launcher.checks import check_args

    try:
        check_args(args, n_gpus=0, env={"CUDA_VISIBLE_DEVICES": "", **env}, devices=[])
    except LaunchError:
        gpus = {"CTRBENCH_GPUS": "0,1", **env}
        check_args(args, n_gpus=2, env=gpus, devices=[("0", "GPU-0"), ("1", "GPU-1")])


@pytest.mark.parametrize("command", HYDRA, ids=[c.id for c in HYDRA])
def test_hydra_command_composes(command: Command, compose_with_hydra) -> None:
    from omegaconf import OmegaConf

    from ctrbench import cli

    args = [cli.normalize_override(a) for a in command.args]
    hydra_args = []
    skip_next = False
    for arg in args:
        if skip_next:
            skip_next = False
        elif arg == "--cfg":
            skip_next = True  # its value: job, hydra or all
        elif arg not in PRINT_FLAGS and arg not in ("-m", "--multirun"):
            hydra_args.append(arg)
    cli.check_overrides(args)  # plugin names and trainer options, as the command checks them
    _launch_checks(args, command.env)
    overrides, search_keys = first_values(hydra_args)
    cfg = compose_with_hydra(overrides)
    assert cfg.model.name and cfg.dataset.name
    for key in search_keys:
        assert OmegaConf.select(cfg, key, default="<missing>") != "<missing>", (
            f"{command.where}: hydra.sweeper.params.{key} searches a key the config does not have"
        )


@pytest.mark.parametrize("command", VERSION, ids=[c.id for c in VERSION])
def test_version_command_prints_the_version(command: Command, capsys) -> None:
    from ctrbench import __version__, cli

    assert command.args == [command.args[0]], f"{command.where}: --version takes nothing after it"
    assert cli.main(command.args) == 0
    assert capsys.readouterr().out.strip() == f"ctrbench {__version__}"


# --- subcommands ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", SUBCOMMAND, ids=[c.id for c in SUBCOMMAND])
def test_subcommand_parses(command: Command, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """Its own argument parser accepts the arguments; folders named are made (empty) under tmp_path."""
    from ctrbench import cli

    name, rest = command.args[0], command.args[1:]
    assert name in cli.SUBCOMMANDS
    if name == "plugins":
        assert rest == [], f"{command.where}: ctrbench plugins takes no arguments"
        return
    monkeypatch.chdir(tmp_path)
    for token in rest:
        if "/" in token and not token.startswith("-"):
            (tmp_path / token).mkdir(parents=True, exist_ok=True)
    try:
        code = cli.main(command.args)
    except SystemExit as exc:  # argparse: an unknown option or a missing argument
        pytest.fail(
            f"{command.where}: ctrbench {name} refused its arguments: {capsys.readouterr().err}"
            f" (exit {exc.code})"
        )
    err = capsys.readouterr().err
    assert "unknown paper table" not in err and "no such folder" not in err, err
    assert code in (0, 2), (code, err)  # 2: an empty folder has no result.json, said in one line


# --- the checks catch drift -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        "ctrbench model=nope",  # a plugin that does not exist
        "ctrbench model=base model.emb_dimm=8",  # a misspelt plugin option
        "ctrbench trainer.max_epoch=5",  # a misspelt Trainer argument
        "ctrbench -m +experiment=din_table9",  # a preset that does not exist
        "ctrbench -m model=lr,base hydra/launcher=gpu",  # a launcher preset that does not exist
        "ctrbench -m +sweep=lambda 'hydra.sweeper.params.optim.learning_rate=interval(1e-4, 1e-2)'",
        "ctrbench -m trainer.devices=2 trainer.strategy=ddp model=lr,base",  # refused under -m
    ],
)
def test_a_drifted_hydra_command_is_caught(line: str, compose_with_hydra) -> None:
    command = to_command("x:1", line)
    with pytest.raises(Exception):  # noqa: B017  each check raises its own kind: any one will do
        test_hydra_command_composes(command, compose_with_hydra)


@pytest.mark.parametrize(
    "line",
    [
        "ctrbench report results/x --paper din_table9",  # an unknown paper table
        "ctrbench report results/x --boostrap 10",  # a misspelt option
        "ctrbench compare results/a",  # a missing argument
        "ctrbench plugins --all",  # plugins takes no arguments
    ],
)
def test_a_drifted_subcommand_is_caught(line, tmp_path, monkeypatch, capsys) -> None:
    command = to_command("x:1", line)
    with pytest.raises((AssertionError, pytest.fail.Exception)):
        test_subcommand_parses(command, tmp_path, monkeypatch, capsys)
