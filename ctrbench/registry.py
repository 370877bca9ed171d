"""Plugin registry: entry-point discovery, name → plugin, Hydra config registration.

Four plugin kinds, one entry-point group each (``ctrbench.models``, ``ctrbench.datasets``,
``ctrbench.regularizers``, ``ctrbench.activations``); the entry-point name is what users type
(``model=din``). ctrbench registers its built-ins in its own pyproject exactly like a third party.

* Listing (:func:`specs`, :func:`names`) reads distribution metadata only: no plugin is imported.
* :func:`load` imports one plugin; a failure becomes :class:`BrokenPluginError` naming the
  distribution, and never affects other plugins.
* The same name from two distributions is a :class:`DuplicatePluginError` naming both.
* A plugin class carries its options as a dataclass in its ``Config`` attribute; those typed
  defaults become the Hydra option ``<kind>=<name>`` (:func:`register_configs`), and objects are
  built by name with :func:`build` — never from a ``_target_`` string in a config.

The optional group ``ctrbench.configs`` names packages of YAML files (e.g. ``experiment/x.yaml``)
that are appended to Hydra's search path.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any

KINDS: dict[str, str] = {
    "model": "ctrbench.models",
    "dataset": "ctrbench.datasets",
    "reg": "ctrbench.regularizers",
    "act": "ctrbench.activations",
}
CONFIGS_GROUP = "ctrbench.configs"


class PluginError(Exception):
    """A user-facing plugin problem; its message is one line."""


class UnknownPluginError(PluginError):
    pass


class DuplicatePluginError(PluginError):
    pass


class BrokenPluginError(PluginError):
    pass


@dataclass(frozen=True)
class PluginSpec:
    """One registered plugin, known from metadata alone."""

    kind: str
    name: str
    value: str
    dist: str
    version: str
    entry_point: EntryPoint = dataclasses.field(repr=False, compare=False)

    def describe(self) -> dict[str, str]:
        return {"name": self.name, "dist": self.dist, "version": self.version}


def _dist(ep: EntryPoint) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "?", "?"
    return dist.metadata["Name"] or dist.name, dist.version


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise PluginError(f"unknown plugin kind {kind!r} (kinds: {', '.join(KINDS)})")
    return KINDS[kind]


def _collect(kind: str, group: str) -> dict[str, PluginSpec]:
    found: dict[str, PluginSpec] = {}
    for ep in entry_points(group=group):
        dist, version = _dist(ep)
        spec = PluginSpec(kind, ep.name, ep.value, dist, version, ep)
        other = found.get(ep.name)
        if other is not None and other.dist != dist:
            raise DuplicatePluginError(
                f"{kind} plugin {ep.name!r} is registered by two distributions: "
                f"{other.dist} {other.version} ({other.value}) and {dist} {version} ({ep.value}); "
                "uninstall one of them"
            )
        found[ep.name] = spec
    return dict(sorted(found.items()))


@cache
def specs(kind: str) -> dict[str, PluginSpec]:
    """Installed plugins of one kind, by name (reads metadata only; imports nothing)."""
    return _collect(kind, _check_kind(kind))


@cache
def config_packages() -> dict[str, PluginSpec]:
    """Packages of YAML configs contributed through the ``ctrbench.configs`` group."""
    return _collect("configs", CONFIGS_GROUP)


def names(kind: str) -> list[str]:
    return list(specs(kind))


def refresh() -> None:
    """Forget everything discovered or imported (after installing plugins at run time, in tests)."""
    specs.cache_clear()
    config_packages.cache_clear()
    load.cache_clear()


def get(kind: str, name: str) -> PluginSpec:
    found = specs(kind)
    if name not in found:
        choices = ", ".join(found) or "none"
        raise UnknownPluginError(f"unknown {kind} {name!r} (installed: {choices})")
    return found[name]


@cache
def load(kind: str, name: str) -> type:
    """Import one plugin and return its class."""
    spec = get(kind, name)
    try:
        obj = spec.entry_point.load()
    except Exception as exc:  # any import-time failure of third-party code
        raise BrokenPluginError(
            f"{kind} plugin {name!r} from {spec.dist} {spec.version} failed to import "
            f"({spec.value}): {type(exc).__name__}: {exc}"
        ) from exc
    return obj


def config_class(plugin: type) -> type | None:
    """The plugin's options dataclass (``Config`` attribute), or None if it has no options."""
    cfg = getattr(plugin, "Config", None)
    if cfg is None:
        return None
    if not dataclasses.is_dataclass(cfg):
        raise PluginError(f"{plugin.__module__}.{plugin.__qualname__}.Config must be a dataclass")
    return cfg


def make_config(kind: str, name: str, options: Mapping[str, Any] | None = None) -> Any:
    """The plugin's ``Config`` instance from its defaults updated with ``options``."""
    plugin = load(kind, name)
    cfg_cls = config_class(plugin)
    opts = {k: v for k, v in (options or {}).items() if k != "name"}
    if cfg_cls is None:
        if opts:
            raise PluginError(f"{kind} {name!r} takes no options (got: {', '.join(opts)})")
        return None
    known = {f.name for f in dataclasses.fields(cfg_cls)}
    unknown = sorted(set(opts) - known)
    if unknown:
        raise PluginError(
            f"{kind} {name!r} has no option {', '.join(unknown)} (options: {', '.join(sorted(known))})"
        )
    return cfg_cls(**opts)


def build(kind: str, name: str, options: Mapping[str, Any] | None = None, **context: Any) -> Any:
    """Build a plugin object by name: ``Plugin(config, **context)``.

    Contexts by kind: model ← ``schema``, ``activation``; dataset, reg, act ← nothing.
    """
    plugin = load(kind, name)
    config = make_config(kind, name, options)
    return plugin(config, **context) if config is not None else plugin(**context)


def _node(name: str, plugin: type | None) -> Any:
    """Hydra config node for one plugin: its typed defaults plus ``name`` (the registry key)."""
    cfg_cls = config_class(plugin) if plugin is not None else None
    if cfg_cls is None:
        return {"name": name}
    fields = {f.name for f in dataclasses.fields(cfg_cls)}
    if "name" in fields:
        raise PluginError(f"plugin {name!r}: 'name' is reserved and cannot be an option")
    return dataclasses.make_dataclass(
        f"{cfg_cls.__name__}Node", [("name", str, dataclasses.field(default=name))], bases=(cfg_cls,)
    )


def register_configs() -> list[str]:
    """Store one ConfigStore node per installed plugin (group = kind, name = plugin name).

    Plugins are imported here to read their typed defaults. A broken plugin still gets a node,
    so composing a sweep that names it works and only its own jobs fail (with the import error).
    Returns the one-line problems met (broken plugins).
    """
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    problems: list[str] = []
    for kind in KINDS:
        for name in specs(kind):
            try:
                plugin: type | None = load(kind, name)
                node = _node(name, plugin)
            except PluginError as exc:
                problems.append(str(exc))
                node = {"name": name}
            cs.store(group=kind, name=name, node=node, provider="ctrbench")
    return problems


def plugin_rows() -> list[dict[str, str]]:
    """Every installed plugin with its import status (this imports them all)."""
    rows: list[dict[str, str]] = []
    for kind in KINDS:
        for name, spec in specs(kind).items():
            try:
                load(kind, name)
                status = "ok"
            except PluginError as exc:
                status = f"broken: {exc.__cause__.__class__.__name__}: {exc.__cause__}"
            rows.append({"kind": kind, **spec.describe(), "status": status})
    for spec in config_packages().values():
        try:
            found = importlib.util.find_spec(spec.value) is not None
            status = "ok" if found else f"broken: package {spec.value} not found"
        except Exception as exc:
            status = f"broken: {type(exc).__name__}: {exc}"
        rows.append({"kind": "configs", **spec.describe(), "status": status})
    return rows
