"""embedlab: train, validate and compare image-embedding models as a DVC pipeline.

The seed's public API is importable from the top level (lazily, so ``import embedlab``
stays fast)::

    from embedlab import ViTExtractor, TripletLossWithMiner, AllTripletsMiner, BalanceSampler
"""

from __future__ import annotations

from embedlab.lazy import lazy_exports

__version__ = "0.1.0"

_PUBLIC = {
    "AllTripletsMiner": "embedlab.miners",
    "HardTripletsMiner": "embedlab.miners",
    "TripletLossWithMiner": "embedlab.losses",
    "BalanceSampler": "embedlab.data.samplers",
    "DatasetWithLabels": "embedlab.data.datasets",
    "DatasetQueryGallery": "embedlab.data.datasets",
    "ViTExtractor": "embedlab.models",
    "TimmExtractor": "embedlab.models",
    "EmbeddingMetrics": "embedlab.metrics",
    "pairwise_dist": "embedlab.retrieval",
    "ExtractorModule": "embedlab.lightning",
    "MetricValCallback": "embedlab.lightning",
    "Searcher": "embedlab.embedding.searcher",
}

__all__ = sorted(_PUBLIC)

__getattr__ = lazy_exports(__name__, _PUBLIC)
