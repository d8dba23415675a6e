"""Retrieval metrics: pure functions, scoring into a `MetricTable`, and `EmbeddingMetrics`.

Names are imported lazily, so :mod:`embedlab.metrics.names` (the naming rule the tracker
layer uses too) loads without torch.
"""

from __future__ import annotations

from embedlab.lazy import lazy_exports

_PUBLIC = {
    "OVERALL": "embedlab.metrics.names",
    "EmbeddingMetrics": "embedlab.metrics.embedding_metrics",
    "MetricOptions": "embedlab.metrics.scoring",
    "MetricTable": "embedlab.metrics.table",
    "score": "embedlab.metrics.scoring",
    "calc_cmc": "embedlab.metrics.functions",
    "calc_full_ranking_metrics": "embedlab.metrics.functions",
    "calc_map": "embedlab.metrics.functions",
    "calc_ndcg": "embedlab.metrics.functions",
    "calc_pcf": "embedlab.metrics.functions",
    "calc_precision": "embedlab.metrics.functions",
    "calc_r_metrics": "embedlab.metrics.functions",
    "calc_retrieval_metrics": "embedlab.metrics.functions",
    "group_unreduced_metrics": "embedlab.metrics.functions",
    "reduce_metrics": "embedlab.metrics.functions",
    "count_relevant": "embedlab.retrieval.results",
    "factorize": "embedlab.retrieval.query_gallery",
}

__all__ = sorted(_PUBLIC)

__getattr__ = lazy_exports(__name__, _PUBLIC)
