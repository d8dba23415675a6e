"""Which metrics are curves, facts and headline, under the names every backend shares.

The naming rule itself (``val/<group>/<metric>@<k>``) is :mod:`embedlab.metrics.names`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from embedlab.metrics.names import OVERALL, flat_names, split_tracker_name


def metric_names(metrics: Mapping[str, Mapping[str, Any]], prefix: str = "val") -> dict[str, float]:
    """Tracker names of a metrics dict (the rule is :func:`embedlab.metrics.names.flat_names`).

    >>> metric_names({"OVERALL": {"cmc": {1: 0.9}, "pcf": {0.5: 0.1}, "n_queries": 10}})
    {'val/OVERALL/cmc@1': 0.9, 'val/OVERALL/pcf@0.5': 0.1, 'val/OVERALL/n_queries': 10.0}
    """
    return flat_names(metrics, prefix)


HEADLINE = ("cmc@1", "map@5", "map@R")
"""The OVERALL metrics a run is judged by: ``metrics.json``'s columns beside ``dvc exp
show``'s params, and the metric columns of TensorBoard's HPARAMS table."""
FACTS = ("n_queries", "n_queries_no_relevant")
"""Metrics that describe the data, not the model: the same at every validation."""


def curves_and_facts(
    metrics: Mapping[str, Mapping[str, Any]], prefix: str = "val"
) -> tuple[dict[str, float], dict[str, float]]:
    """Split validation metrics into what changes from one validation to the next (curves,
    for ``log_metrics``) and what does not (facts, for ``log_summary``).

    A lone category beside OVERALL repeats OVERALL number for number, so it is left out
    (as ``metrics_per_category.json`` leaves it out).

    >>> curves, facts = curves_and_facts(
    ...     {"OVERALL": {"cmc": {1: 0.9}, "n_queries": 10}, "shoes": {"cmc": {1: 0.9}}})
    >>> curves, facts
    ({'val/OVERALL/cmc@1': 0.9}, {'val/OVERALL/n_queries': 10.0})
    """
    categories = [c for c in metrics if c != OVERALL]
    kept = {c: v for c, v in metrics.items() if not (len(categories) == 1 and c in categories)}
    curves: dict[str, float] = {}
    facts: dict[str, float] = {}
    for name, value in flat_names(kept, prefix).items():
        parts = split_tracker_name(name, prefix)
        (facts if parts is not None and parts[1] in FACTS else curves)[name] = value
    return curves, facts


def headline_tags(prefix: str = "val") -> list[str]:
    """Tracker names of the :data:`HEADLINE` OVERALL metrics.

    >>> headline_tags()
    ['val/OVERALL/cmc@1', 'val/OVERALL/map@5', 'val/OVERALL/map@R']
    """
    return [f"{prefix}/{OVERALL}/{name}" for name in HEADLINE]
