"""Retrieval: pairwise distances and exact chunked kNN search."""

from embedlab.retrieval.distance import (
    DEFAULT_CHUNK_BYTES,
    METRICS,
    auto_chunk_size,
    knn,
    pairwise_dist,
)

__all__ = ["DEFAULT_CHUNK_BYTES", "METRICS", "auto_chunk_size", "knn", "pairwise_dist"]
