"""Optimizers, with sparse embedding tables updated row by row.

Large embedding tables (10⁶–10⁷ rows) train with sparse gradients: only the rows of the batch's
ids get a gradient, and a sparse-aware optimizer updates only those rows, so a step costs the
same at 10⁴ or 10⁷ ids and no dense gradient of the table is ever allocated. ``optim.sparse``:

- ``auto`` (default): schema tables (``EmbeddingBank``) with at least ``sparse_min_rows`` rows,
- ``true``: every ``nn.Embedding`` of the model, ``false``: none.

Sparse tables are optimized by the sparse counterpart of ``optim.name`` (Adam/AdamW → SparseAdam,
i.e. lazy Adam: moments of a row move only when the row is in the batch; Adagrad and SGD take
sparse gradients themselves); ``weight_decay`` applies to the dense parameters only (regularize
tables with ``reg=``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ctrbench.engine.schedules import SchedulerConfig
from ctrbench.nn.embedding import EmbeddingBank

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "adagrad": torch.optim.Adagrad,
    "sgd": torch.optim.SGD,
}
SPARSE_OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.SparseAdam,
    "adamw": torch.optim.SparseAdam,
    "adagrad": torch.optim.Adagrad,
    "sgd": torch.optim.SGD,
}


@dataclass
class OptimConfig:
    name: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    sparse: Any = "auto"  # auto | true | false
    sparse_min_rows: int = 100_000
    fused: bool = True  # torch's fused (one kernel over all parameters) step for the dense part
    scheduler: Any = None  # optim.scheduler (ctrbench.engine.schedules): none | step | exponential

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise ValueError(f"optim.name={self.name!r} is invalid: choose one of {', '.join(OPTIMIZERS)}")
        if not (self.sparse == "auto" or isinstance(self.sparse, bool)):
            raise ValueError(f"optim.sparse={self.sparse!r} is invalid: choose auto, true or false")
        self.scheduler = SchedulerConfig.parse(self.scheduler)


def make_sparse(model: nn.Module, config: OptimConfig) -> list[nn.Embedding]:
    """Switch the tables ``config.sparse`` selects to sparse gradients; returns them."""
    if config.sparse is False:
        tables: list[nn.Embedding] = []
    elif config.sparse is True:
        tables = [m for m in model.modules() if isinstance(m, nn.Embedding)]
    else:
        tables = [
            t
            for bank in model.modules()
            if isinstance(bank, EmbeddingBank)
            for t in bank.tables.values()
            if t.num_embeddings >= config.sparse_min_rows
        ]
    for table in tables:
        table.sparse = True
    return tables


class _SplitState(MutableMapping):
    """The inner optimizers' states as one mapping; a parameter's entry lives in the part that owns
    it (a lookup of a parameter with no state yet creates it there, as torch's defaultdict does)."""

    def __init__(self, parts: list[torch.optim.Optimizer]) -> None:
        self.parts = parts

    def _owner(self, key: Any) -> torch.optim.Optimizer:
        for part in self.parts:
            if key in part.state or any(p is key for g in part.param_groups for p in g["params"]):
                return part
        raise KeyError(key)

    def __getitem__(self, key: Any) -> Any:
        return self._owner(key).state[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        self._owner(key).state[key] = value

    def __delitem__(self, key: Any) -> None:
        del self._owner(key).state[key]

    def __iter__(self) -> Iterator[Any]:
        return (key for part in self.parts for key in list(part.state))

    def __len__(self) -> int:
        return sum(len(part.state) for part in self.parts)


class SplitOptimizer(torch.optim.Optimizer):
    """One optimizer object over several inner ones (dense parameters + sparse tables).

    Written here because torch has no single optimizer taking both dense and sparse gradients
    with Adam semantics, and Lightning's automatic optimization drives exactly one optimizer
    (several would force manual optimization on every model). ``param_groups`` and ``state``
    are views of the inner optimizers, so LR schedulers, gradient clipping and checkpoints work.
    """

    def __init__(self, parts: Iterable[torch.optim.Optimizer]) -> None:
        # torch.optim.Optimizer.__init__ is not called: groups and state live in the parts.
        self.parts = list(parts)
        self.defaults = dict(self.parts[0].defaults)
        self._optimizer_step_pre_hooks = {}
        self._optimizer_step_post_hooks = {}
        self._optimizer_state_dict_pre_hooks = {}
        self._optimizer_state_dict_post_hooks = {}
        self._optimizer_load_state_dict_pre_hooks = {}
        self._optimizer_load_state_dict_post_hooks = {}

    @property
    def param_groups(self) -> list[dict[str, Any]]:  # type: ignore[override]
        return [g for p in self.parts for g in p.param_groups]

    @property
    def state(self) -> _SplitState:  # type: ignore[override]
        return _SplitState(self.parts)

    def __getstate__(self) -> dict[str, Any]:
        return {"parts": self.parts}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["parts"])

    def __repr__(self) -> str:
        return f"SplitOptimizer({', '.join(type(p).__name__ for p in self.parts)})"

    def zero_grad(self, set_to_none: bool = True) -> None:
        for part in self.parts:
            part.zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for part in self.parts:
            part.step()
        return loss

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        return {"parts": [p.state_dict() for p in self.parts]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # type: ignore[override]
        for part, sd in zip(self.parts, state_dict["parts"], strict=True):
            part.load_state_dict(sd)


def dense_optimizer(params: list[nn.Parameter], config: OptimConfig) -> torch.optim.Optimizer:
    """``optim.name`` over dense parameters, fused when asked and the build of torch has it."""
    cls = OPTIMIZERS[config.name]
    if config.fused:
        try:
            return cls(params, lr=config.lr, weight_decay=config.weight_decay, fused=True)
        except (RuntimeError, TypeError):  # no fused kernel for this device / dtype / torch
            pass
    return cls(params, lr=config.lr, weight_decay=config.weight_decay)


def build_optimizer(model: nn.Module, config: OptimConfig) -> torch.optim.Optimizer:
    """``optim.name`` over the dense parameters, its sparse counterpart over sparse tables."""
    sparse_params = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding) and m.sparse}
    dense = [p for p in model.parameters() if id(p) not in sparse_params]
    sparse = [p for p in model.parameters() if id(p) in sparse_params]
    dense_opt = None
    if dense:
        dense_opt = dense_optimizer(dense, config)
    if not sparse:
        assert dense_opt is not None
        return dense_opt
    sparse_opt = SPARSE_OPTIMIZERS[config.name](sparse, lr=config.lr)
    return SplitOptimizer([o for o in (dense_opt, sparse_opt) if o is not None])
