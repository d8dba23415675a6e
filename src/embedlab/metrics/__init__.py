"""Retrieval metrics: pure functions and the `EmbeddingMetrics` accumulator."""

from embedlab.metrics.embedding_metrics import EmbeddingMetrics
from embedlab.metrics.functions import (
    OVERALL,
    calc_cmc,
    calc_map,
    calc_pcf,
    calc_precision,
    calc_r_metrics,
    calc_retrieval_metrics,
    count_relevant,
    factorize,
    group_unreduced_metrics,
    reduce_metrics,
)

__all__ = [
    "OVERALL",
    "EmbeddingMetrics",
    "calc_cmc",
    "calc_map",
    "calc_pcf",
    "calc_precision",
    "calc_r_metrics",
    "calc_retrieval_metrics",
    "count_relevant",
    "factorize",
    "group_unreduced_metrics",
    "reduce_metrics",
]
