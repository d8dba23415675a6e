"""Retrieval: distances, exact chunked kNN, the query/gallery value, `RetrievalResults`,
post-processors and search indexes (pure tensor code: no images, no models)."""

from embedlab.retrieval.distance import (
    DEFAULT_CHUNK_BYTES,
    METRICS,
    auto_chunk_size,
    pairwise_dist,
)
from embedlab.retrieval.knn import knn
from embedlab.retrieval.postprocess import (
    AverageQueryExpansion,
    KReciprocalReranking,
    apply_postprocessors,
    build_postprocessors,
)
from embedlab.retrieval.query_gallery import QueryGallery
from embedlab.retrieval.results import RetrievalResults, retrieve

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "METRICS",
    "AverageQueryExpansion",
    "KReciprocalReranking",
    "QueryGallery",
    "RetrievalResults",
    "apply_postprocessors",
    "auto_chunk_size",
    "build_postprocessors",
    "knn",
    "pairwise_dist",
    "retrieve",
]
