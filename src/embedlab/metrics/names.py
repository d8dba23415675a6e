"""The one rule that names a metric, everywhere: files, trackers, compare and pictures.

A metric is a *name* (``cmc``, ``map``, ``map@R``, ``aqe/cmc``) and, for the per-cut-off
ones, a *k* (``1``, ``5``, ``0.5`` for ``pcf``). Its key is ``name@k`` (``cmc@1``) or the
bare name (``map@R``, ``n_queries``); in the trackers it is prefixed with the group
(``val/OVERALL/cmc@1``); MLflow, which refuses ``@``, gets ``val/OVERALL/cmc_at_1``.
This module imports nothing heavy, so the tracker layer can use it too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "OVERALL",
    "flat_names",
    "format_k",
    "metric_key",
    "mlflow_name",
    "split_metric_key",
    "split_tracker_name",
]

OVERALL = "OVERALL"
"""The group of all queries (beside one group per category)."""


def format_k(k: Any) -> str:
    """``1`` -> ``"1"``, ``0.5`` -> ``"0.5"``; a float k keeps its point (``5.0`` -> ``"5.0"``).

    >>> format_k(1), format_k(0.5), format_k(5.0)
    ('1', '0.5', '5.0')
    """
    return str(int(k)) if float(k).is_integer() and not isinstance(k, float) else str(k)


def metric_key(name: str, k: Any = None) -> str:
    """``("cmc", 1)`` -> ``"cmc@1"``; ``("map@R", None)`` -> ``"map@R"``.

    >>> metric_key("cmc", 1), metric_key("pcf", 0.5), metric_key("map@R")
    ('cmc@1', 'pcf@0.5', 'map@R')
    """
    return name if k is None else f"{name}@{format_k(k)}"


def split_metric_key(key: str) -> tuple[str, int | float | None]:
    """The inverse of :func:`metric_key`: ``"cmc@1"`` -> ``("cmc", 1)``.

    A key whose part after the last ``@`` is not a number is a bare name (``map@R``).

    >>> split_metric_key("cmc@1"), split_metric_key("pcf@0.5"), split_metric_key("map@R")
    (('cmc', 1), ('pcf', 0.5), ('map@R', None))
    >>> split_metric_key("aqe/map@5"), split_metric_key("n_queries")
    (('aqe/map', 5), ('n_queries', None))
    """
    name, at, k_text = key.rpartition("@")
    if not at:
        return key, None
    try:
        return name, int(k_text)
    except ValueError:
        pass
    try:
        return name, float(k_text)
    except ValueError:
        return key, None


def flat_names(metrics: Mapping[str, Mapping[str, Any]], prefix: str = "val") -> dict[str, float]:
    """Flatten ``{"OVERALL": {"cmc": {1: 0.9}, "n_queries": 10}}`` to ``prefix/group/key``.

    An empty prefix gives ``group/key``.

    >>> flat_names({"OVERALL": {"cmc": {1: 0.9}, "pcf": {0.5: 0.1}, "n_queries": 10}})
    {'val/OVERALL/cmc@1': 0.9, 'val/OVERALL/pcf@0.5': 0.1, 'val/OVERALL/n_queries': 10.0}
    """
    head = f"{prefix}/" if prefix else ""
    out: dict[str, float] = {}
    for group, values in metrics.items():
        for name, value in values.items():
            if isinstance(value, Mapping):
                for k, v in value.items():
                    out[f"{head}{group}/{metric_key(name, k)}"] = _number(v)
            else:
                out[f"{head}{group}/{name}"] = _number(value)
    return out


def split_tracker_name(name: str, prefix: str = "val") -> tuple[str, str] | None:
    """``"val/OVERALL/cmc@1"`` -> ``("OVERALL", "cmc@1")``; None for another prefix.

    Post-processed metrics keep their own slash: ``val/OVERALL/aqe/cmc@1`` ->
    ``("OVERALL", "aqe/cmc@1")``.

    >>> split_tracker_name("val/OVERALL/aqe/cmc@1"), split_tracker_name("train/loss")
    (('OVERALL', 'aqe/cmc@1'), None)
    """
    head, _, rest = name.partition("/")
    if head != prefix or "/" not in rest:
        return None
    group, _, key = rest.partition("/")
    return group, key


def mlflow_name(name: str) -> str:
    """MLflow refuses ``@`` in metric names: ``cmc@1`` is logged as ``cmc_at_1``.

    >>> mlflow_name("val/OVERALL/cmc@1"), mlflow_name("train/loss")
    ('val/OVERALL/cmc_at_1', 'train/loss')
    """
    return name.replace("@", "_at_")


def _number(value: Any) -> float:
    return float(value.item() if hasattr(value, "item") else value)
