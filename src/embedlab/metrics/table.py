"""`MetricTable`: the scores of one validation, overall, per category and per query.

What scoring (:func:`embedlab.metrics.scoring.score`) returns and every report reads:
``metrics.json`` and ``metrics_all.json``, ``per_query.csv``, the trackers, compare and
the worst-query grid. Names come from :mod:`embedlab.metrics.names` only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from embedlab.errors import EmbedlabError
from embedlab.metrics.names import OVERALL, flat_names, metric_key, split_metric_key

__all__ = ["MetricTable"]


@dataclass(frozen=True)
class MetricTable:
    """Scores in OML's shape, with the naming rule attached.

    Attributes:
        metrics: ``{"OVERALL": {"cmc": {1: 0.9}, "map@R": 0.7, "pcf": {0.5: 0.2},
            "n_queries": 3000, ...}, "<category>": {...}}``: OVERALL first, then the
            categories in sorted order.
        per_query: the same shape with one value per valid query (tensors), in query
            order; ``per_query["OVERALL"]`` aligns with :attr:`query_numbers`.
        query_numbers: ``[V]`` the valid queries' numbers among all queries.

    Example:
        >>> table = MetricTable({"OVERALL": {"cmc": {1: 0.5}, "map@R": 0.25, "n_queries": 2}},
        ...                     {"OVERALL": {"cmc": {1: torch.tensor([1.0, 0.0])},
        ...                                  "map@R": torch.tensor([0.5, 0.0])}},
        ...                     torch.tensor([0, 2]))
        >>> table.flat()
        {'cmc@1': 0.5, 'map@R': 0.25, 'n_queries': 2.0}
        >>> table.tracker_names()
        {'val/OVERALL/cmc@1': 0.5, 'val/OVERALL/map@R': 0.25, 'val/OVERALL/n_queries': 2.0}
        >>> table.per_query_values("cmc@1").tolist(), list(table.per_query_columns())
        ([1.0, 0.0], ['cmc@1', 'map@R'])
    """

    metrics: dict[str, dict[str, Any]]
    per_query: dict[str, dict[str, Any]] = field(default_factory=dict)
    query_numbers: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.int64))

    @property
    def groups(self) -> list[str]:
        """``OVERALL`` and the categories."""
        return list(self.metrics)

    def flat(self, group: str = OVERALL) -> dict[str, float]:
        """One group's numbers under their keys (``cmc@1``, ``map@R``, ``n_queries``)."""
        return {
            name.removeprefix(f"{group}/"): v
            for name, v in flat_names({group: self.metrics[group]}, prefix="").items()
        }

    def tracker_names(self, prefix: str = "val") -> dict[str, float]:
        """Every number under its tracker name: ``val/<group>/<key>``."""
        return flat_names(self.metrics, prefix)

    def per_query_columns(self, group: str = OVERALL) -> dict[str, np.ndarray]:
        """``{key: values}`` of each per-query metric (PCF and counts have none)."""
        out: dict[str, np.ndarray] = {}
        for name, values in self.per_query.get(group, {}).items():
            if isinstance(values, Tensor):
                out[metric_key(name)] = values.numpy()
            elif isinstance(values, Mapping) and name != "pcf":
                for k, v in values.items():
                    out[metric_key(name, k)] = v.numpy()
        return out

    def per_query_values(self, key: str, group: str = OVERALL) -> Tensor:
        """The per-query values of one metric by its key (``"map@5"``), aligned with
        :attr:`query_numbers` for OVERALL; a one-line error names the keys there are."""
        name, k = split_metric_key(key)
        values = self.per_query.get(group, {}).get(name)
        if isinstance(values, Mapping):
            values = values.get(k)
        if not isinstance(values, Tensor) or name == "pcf":
            known = ", ".join(self.per_query_columns(group)) or "none"
            raise EmbedlabError(f"unknown per-query metric {key!r} (computed: {known})")
        return values

    @staticmethod
    def merge_groups(*parts: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
        """Merge per-group dicts, OVERALL first and categories sorted (a helper of scoring).

        >>> MetricTable.merge_groups({"b": {"x": 1}}, {"OVERALL": {"y": 2}, "b": {"z": 3}})
        {'OVERALL': {'y': 2}, 'b': {'x': 1, 'z': 3}}
        """
        names = sorted({g for part in parts for g in part} - {OVERALL})
        out: dict[str, dict[str, Any]] = {}
        for group in [OVERALL, *names]:
            merged: dict[str, Any] = {}
            for part in parts:
                merged.update(part.get(group, {}))
            out[group] = merged
        return out
