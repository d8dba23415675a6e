"""Query-by-query differences of two runs: alignment on ``row_id``, the metrics that decide
fixed/broken and their order, and the params that changed (fixed and broken queries of
groups of seeds: :func:`embedlab.compare.groups.consistent_changes`)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from embedlab.config import flatten
from embedlab.errors import EmbedlabError
from embedlab.metrics.names import split_metric_key

__all__ = [
    "AlignedQueries",
    "align_queries",
    "changed_params",
    "fixed_by",
    "order_metric",
]


@dataclass
class AlignedQueries:
    """Both runs' per-query tables on the same queries, in A's row order."""

    a: pd.DataFrame
    b: pd.DataFrame
    metrics: list[str]
    only_a: list[str]
    only_b: list[str]

    def differences(self) -> np.ndarray:
        """``b - a`` per query and metric: ``[n_queries, n_metrics]``."""
        return self.b[self.metrics].to_numpy(float) - self.a[self.metrics].to_numpy(float)


def _ids(values: Sequence[int], limit: int = 5) -> str:
    shown = ", ".join(str(v) for v in list(values)[:limit])
    return shown + (", ..." if len(values) > limit else "")


def align_queries(
    a: pd.DataFrame, b: pd.DataFrame, name_a: str = "A", name_b: str = "B"
) -> AlignedQueries:
    """Match two ``per_query.csv`` tables on ``row_id``; their queries must be the same.

    Example:
        >>> a = pd.DataFrame({"row_id": [4, 2], "path": ["x", "y"], "cmc@1": [1.0, 0.0]})
        >>> b = pd.DataFrame({"row_id": [2, 4], "path": ["y", "x"], "cmc@1": [1.0, 1.0]})
        >>> aligned = align_queries(a, b)
        >>> aligned.a["row_id"].tolist(), aligned.differences()[:, 0].tolist()
        ([4, 2], [0.0, 1.0])
        >>> try:
        ...     align_queries(a, b.assign(row_id=[2, 5]), "lr-1e-3", "lr-3e-3")
        ... except EmbedlabError as exc:
        ...     print(str(exc)[:88])
        runs 'lr-1e-3' and 'lr-3e-3' scored different queries: 1 row id(s) only in 'lr-1e-3' (4)
    """
    ids_a, ids_b = set(a["row_id"].tolist()), set(b["row_id"].tolist())
    if ids_a != ids_b:
        only_a, only_b = sorted(ids_a - ids_b), sorted(ids_b - ids_a)
        raise EmbedlabError(
            f"runs '{name_a}' and '{name_b}' scored different queries: "
            f"{len(only_a)} row id(s) only in '{name_a}' ({_ids(only_a) or '-'}), "
            f"{len(only_b)} only in '{name_b}' ({_ids(only_b) or '-'}); "
            "compare runs validated on the same data"
        )
    b = b.set_index("row_id").loc[a["row_id"]].reset_index()
    if "path" in a and "path" in b:
        differ = (a["path"].astype(str).to_numpy() != b["path"].astype(str).to_numpy()).nonzero()[0]
        if len(differ):
            i = int(differ[0])
            raise EmbedlabError(
                f"runs '{name_a}' and '{name_b}' differ on query row_id {a['row_id'].iloc[i]}: "
                f"path {a['path'].iloc[i]!r} vs {b['path'].iloc[i]!r} "
                f"({len(differ)} row(s) differ); compare runs validated on the same data"
            )
    from embedlab.compare.runs import metric_columns

    columns_a, columns_b = metric_columns(a), metric_columns(b)
    common = [c for c in columns_a if c in columns_b]
    if not common:
        raise EmbedlabError(
            f"runs '{name_a}' and '{name_b}' share no metric column ({columns_a} vs {columns_b})"
        )
    return AlignedQueries(
        a=a.reset_index(drop=True),
        b=b,
        metrics=common,
        only_a=[c for c in columns_a if c not in common],
        only_b=[c for c in columns_b if c not in common],
    )


def order_metric(metrics: Sequence[str]) -> str:
    """The metric that orders regressions: ``map@k`` (smallest k), else ``precision@k``...

    Example:
        >>> order_metric(["cmc@1", "cmc@5", "precision@5", "map@5"])
        'map@5'
    """
    for family in ("map@", "precision@", "cmc@"):
        found = sorted((m for m in metrics if m.startswith(family)), key=_k)
        if found:
            return found[0]
    return metrics[0]


def _k(metric: str) -> float:
    k = split_metric_key(metric)[1]
    return float("inf") if k is None else float(k)


def fixed_by(metrics: Sequence[str]) -> str:
    """The hit metric that decides fixed/broken: ``cmc@1``, else the smallest ``cmc@k``."""
    cmc = sorted((m for m in metrics if m.startswith("cmc@")), key=_k)
    if not cmc:
        raise EmbedlabError(f"no cmc@k column to tell fixed from broken queries (got {metrics})")
    return cmc[0]


def _shown(value: Any) -> Any:
    """A param value as JSON can hold it (YAML may give dates, lists, mappings)."""
    if isinstance(value, list | dict):
        return json.dumps(value, default=str)
    return value if isinstance(value, str | int | float | bool | None) else str(value)


def changed_params(params: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """Dotted keys whose value is not the same in every run, with each run's value.

    A key missing from a run shows as None.

    Example:
        >>> a, b = {"train": {"lr": 0.1, "epochs": 3}}, {"train": {"lr": 0.3, "epochs": 3}}
        >>> changed_params([a, b])
        {'train.lr': [0.1, 0.3]}
    """
    flat = [flatten(dict(p)) for p in params]
    keys = list(dict.fromkeys(k for f in flat for k in f))
    changed: dict[str, list[Any]] = {}
    for key in keys:
        values = [_shown(f.get(key)) for f in flat]
        if any(v != values[0] for v in values[1:]):
            changed[key] = values
    return changed
