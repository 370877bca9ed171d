"""Hydra's sweep syntax → Optuna distributions (the search space of ``hydra/sweeper=optuna``).

Every entry is one Hydra override, parsed by Hydra's own ``OverridesParser``:

- ``key: tag(log, interval(a, b))`` → ``FloatDistribution(a, b, log=True)``;
- ``key: interval(a, b)`` → ``FloatDistribution(a, b)``; ``IntDistribution(a, b)`` when both bounds are
  written as integers (Hydra's parser hands them over as floats, so the text decides);
- ``key: range(a, b[, step])`` → Python's range, end excluded: ``IntDistribution(a, last, step=step)``;
  ``FloatDistribution(a, last, step=step)`` when a bound or the step is a float; ``tag(log, range(...))``
  is log-scaled (Optuna has no log scale with a step, so the step is dropped);
- ``key: choice(x, y)``, ``key: x,y`` and ``shuffle(...)`` → ``CategoricalDistribution((x, y))`` — config
  groups too (``model: choice(din, base)``);
- ``key: value`` → fixed: passed to every trial as ``key=value``, not an Optuna parameter.

This follows the mapping of Hydra's own Optuna sweeper plugin (``create_optuna_distribution_from_override``
in ``hydra_plugins/hydra_optuna_sweeper/_impl.py``) on Optuna's current distribution classes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    RangeSweep,
    Transformer,
)
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

__all__ = ["SearchSpace", "distribution", "flatten_params", "format_value", "parse_search_space"]

_INT = re.compile(r"^[+-]?\d+$")
_INTERVAL_ARGS = re.compile(r"interval\s*\(\s*([^,()]+?)\s*,\s*([^,()]+?)\s*\)")


@dataclass
class SearchSpace:
    """Optuna distributions by override key, plus the fixed overrides every trial gets."""

    distributions: dict[str, BaseDistribution] = field(default_factory=dict)
    fixed: list[str] = field(default_factory=list)

    def overrides(self, params: Mapping[str, Any]) -> list[str]:
        """The Hydra overrides of one trial: the fixed ones, then ``key=value`` per sampled param."""
        return [*self.fixed, *(f"{key}={format_value(value)}" for key, value in params.items())]


def format_value(value: Any) -> str:
    """A sampled value as Hydra override text (strings escaped, ``true``/``null`` spelled Hydra's way)."""
    return Override._get_value_element_as_str(value)


def _written_as_ints(override: Override) -> bool:
    """Whether ``interval(a, b)`` was typed with integer bounds (Hydra hands both over as floats)."""
    text = override.input_line or ""
    match = _INTERVAL_ARGS.search(text.split("=", 1)[-1])
    return bool(match) and all(_INT.match(bound) for bound in match.groups())


def distribution(override: Override) -> BaseDistribution | None:
    """The Optuna distribution of a sweep override; ``None`` for a plain (fixed) value.

    Raises ``ValueError`` for a sweep Optuna cannot express (e.g. an open interval).
    """
    if not override.is_sweep_override():
        return None
    value = override.value()
    if override.is_choice_sweep() or (isinstance(value, RangeSweep) and value.shuffle):
        choices = tuple(override.sweep_iterator(transformer=Transformer.encode))
        return CategoricalDistribution(choices)  # type: ignore[arg-type]
    log = "log" in getattr(value, "tags", set())
    if isinstance(value, RangeSweep):
        start, stop, step = value.start, value.stop, value.step
        if start is None or stop is None:
            raise ValueError(f"{override.input_line}: a range needs a start and a stop")
        if step <= 0:
            raise ValueError(f"{override.input_line}: the step must be positive")
        if any(isinstance(x, float) for x in (start, stop, step)):
            if log:
                return FloatDistribution(float(start), float(stop), log=True)
            n_values = math.ceil(round((stop - start) / step, 9))  # Hydra's float range excludes stop
            if n_values < 1:
                raise ValueError(f"{override.input_line}: empty range")
            high = round(start + (n_values - 1) * step, 12)
            return FloatDistribution(float(start), float(high), step=float(step))
        high = int(start) + (int(stop) - int(start) - 1) // int(step) * int(step)  # last value of range()
        if high < int(start):
            raise ValueError(f"{override.input_line}: empty range")
        if log:
            return IntDistribution(int(start), high, log=True)
        return IntDistribution(int(start), high, step=int(step))
    if isinstance(value, IntervalSweep):
        if value.start is None or value.end is None:
            raise ValueError(f"{override.input_line}: an interval needs both bounds")
        if _written_as_ints(override):
            return IntDistribution(int(value.start), int(value.end), log=log)
        return FloatDistribution(float(value.start), float(value.end), log=log)
    if isinstance(value, ChoiceSweep):  # pragma: no cover - is_choice_sweep() caught it
        return CategoricalDistribution(tuple(value.list))
    raise ValueError(f"{override.input_line}: sweep type not supported by the Optuna sweeper")


def flatten_params(params: Mapping[str, Any] | None, prefix: str = "") -> dict[str, Any]:
    """``{"reg": {"lam": x}}`` and ``{"reg.lam": x}`` alike → ``{"reg.lam": x}``."""
    flat: dict[str, Any] = {}
    for key, value in (params or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else format_value(value)


def parse_search_space(
    params: Mapping[str, Any] | None,
    arguments: Sequence[str] = (),
    parser: OverridesParser | None = None,
) -> SearchSpace:
    """The search space of ``hydra.sweeper.params`` plus the command line's ``arguments``.

    Config entries come first, then the command line; a key given on both uses the command line's
    value. Sweeps become distributions, plain values fixed overrides (kept as typed, ``+``/``~`` too).
    """
    parser = parser or OverridesParser.create()
    lines = [f"{key}={_as_text(value)}" for key, value in flatten_params(params).items()]
    parsed = parser.parse_overrides([*lines, *arguments])
    by_key: dict[str, tuple[Override, BaseDistribution | None]] = {}
    for override in parsed:
        by_key.pop(override.get_key_element(), None)  # the later one wins, in the later position
        by_key[override.get_key_element()] = (override, distribution(override))
    space = SearchSpace()
    for key, (override, dist) in by_key.items():
        if dist is None:
            space.fixed.append(override.input_line or f"{key}={override.get_value_element_as_str()}")
        else:
            space.distributions[key] = dist
    return space
