"""Metric names shared by every backend: ``val/<category>/<metric>@<k>``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _number(value: Any) -> float:
    return float(value.item() if hasattr(value, "item") else value)


def _k(k: Any) -> str:
    """``1`` -> ``"1"``, ``0.5`` -> ``"0.5"``, ``5.0`` -> ``"5"``."""
    return str(int(k)) if float(k).is_integer() and not isinstance(k, float) else str(k)


def metric_names(metrics: Mapping[str, Mapping[str, Any]], prefix: str = "val") -> dict[str, float]:
    """Flatten ``{"OVERALL": {"cmc": {1: 0.9}, "n_queries": 10}}`` to tracker names.

    >>> metric_names({"OVERALL": {"cmc": {1: 0.9}, "pcf": {0.5: 0.1}, "n_queries": 10}})
    {'val/OVERALL/cmc@1': 0.9, 'val/OVERALL/pcf@0.5': 0.1, 'val/OVERALL/n_queries': 10.0}
    """
    out: dict[str, float] = {}
    for category, values in metrics.items():
        for name, value in values.items():
            if isinstance(value, Mapping):
                for k, v in value.items():
                    out[f"{prefix}/{category}/{name}@{_k(k)}"] = _number(v)
            else:
                out[f"{prefix}/{category}/{name}"] = _number(value)
    return out
