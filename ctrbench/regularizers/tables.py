"""Which embedding tables a regularizer acts on, the ids a batch holds in them, and the tables
themselves inside any model built from :class:`~ctrbench.nn.embedding.EmbeddingBank`.

By default a regularizer acts on every table shared by a behaviour sequence and a candidate
field — the item-like ids (DIN's goods_ids: ``item`` and ``cat`` with ``hist_item``/``hist_cat``).
"""

from __future__ import annotations

import torch
from torch import nn

from ctrbench.nn.embedding import EmbeddingBank
from ctrbench.schema import Field, Schema

Batch = dict[str, torch.Tensor]


class TableSelectionError(ValueError):
    pass


def default_tables(schema: Schema) -> list[str]:
    """Tables of the behaviour sequences (history and candidate share them)."""
    return list(dict.fromkeys(f.table for f in schema.behaviours))


def select_tables(schema: Schema, tables: list[str] | None, reg: str) -> list[str]:
    """``tables`` validated against the schema (None → :func:`default_tables`)."""
    available = list(schema.tables())
    if tables is None:
        chosen = default_tables(schema)
        if not chosen:
            raise TableSelectionError(
                f"reg={reg}: dataset {schema.source or '?'!r} has no behaviour sequence, so there is no "
                f"default table; set reg.tables to some of: {', '.join(available)}"
            )
        return chosen
    unknown = [t for t in tables if t not in available]
    if unknown:
        raise TableSelectionError(
            f"reg.tables names unknown table(s) {', '.join(map(repr, unknown))} "
            f"(tables of dataset {schema.source or '?'!r}: {', '.join(available)})"
        )
    return list(dict.fromkeys(tables))


def feature_fields(schema: Schema, table: str) -> list[Field]:
    """Fields whose ids are features of a sample in ``table``: the candidate and the behaviours
    (sampled negative sequences are auxiliary inputs, not features, and are left out)."""
    return [
        f
        for f in schema.fields
        if f.table == table and f.kind in ("categorical", "sequence") and f.negative_of is None
    ]


def batch_ids(batch: Batch, fields: list[Field]) -> torch.Tensor:
    """Distinct non-padding ids of ``fields`` in the batch (α_mj = 1 for these j, DIN eq. 6)."""
    ids = torch.cat([batch[f.name].reshape(-1) for f in fields])
    ids = torch.unique(ids)
    return ids[ids != 0]


def batch_id_counts(batch: Batch, fields: list[Field]) -> tuple[torch.Tensor, torch.Tensor]:
    """(distinct non-padding ids, number of occurrences of each in the batch)."""
    ids = torch.cat([batch[f.name].reshape(-1) for f in fields])
    ids, counts = torch.unique(ids, return_counts=True)
    keep = ids != 0
    return ids[keep], counts[keep]


def embedding_tables(model: nn.Module) -> dict[str, list[nn.Embedding]]:
    """Schema table name → every ``nn.Embedding`` holding that table in the model (a model may
    keep several banks, e.g. DeepFM's first-order weights and its factors)."""
    out: dict[str, list[nn.Embedding]] = {}
    for module in model.modules():
        if isinstance(module, EmbeddingBank):
            for name, table in module.tables.items():
                out.setdefault(name, []).append(table)
    return out


def lookup(table: nn.Embedding, ids: torch.Tensor) -> torch.Tensor:
    """Rows ``ids`` of a table, with a sparse gradient when the table is sparse (so a penalty on a
    few rows never materialises a dense gradient of the whole table)."""
    return nn.functional.embedding(ids, table.weight, sparse=table.sparse)


def model_tables(model: nn.Module, tables: list[str], reg: str) -> list[tuple[str, nn.Embedding]]:
    """(table name, embedding) for every selected table the model holds; one clear error when it
    holds none of them (a model exposes tables to regularizers through ``EmbeddingBank``)."""
    found = embedding_tables(model)
    out = [(t, emb) for t in tables for emb in found.get(t, [])]
    if not out:
        raise TableSelectionError(
            f"reg={reg}: model {type(model).__name__} holds none of the tables {', '.join(tables)} in a "
            f"ctrbench.nn.EmbeddingBank (its tables: {', '.join(found) or 'none'})"
        )
    return out
