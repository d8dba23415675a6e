"""Exact, chunked k-nearest-neighbour search.

`knn` walks over the queries in chunks, computes one ``chunk x gallery`` block of
distances with a single matrix product, keeps the top k of each row and drops the
block, so memory stays bounded by the chunk size whatever the number of queries.

Ordering contract of `knn`: for every query the returned neighbours are sorted by
distance ascending, and items whose distances compare equal (as computed in float32)
are ordered by gallery index ascending. This holds across the top-k boundary too: of
several gallery items tied at the k-th distance, the ones with the smallest gallery
indices are returned. The result is therefore deterministic and independent of
``chunk_size``.

When the queries are the gallery (same tensor, same ids and sequence codes) the
distance matrix is symmetric and `knn` tiles its upper triangle instead
(:mod:`embedlab.retrieval.symmetric`): each ``chunk x chunk`` block is computed once and
feeds the top k of its rows *and* of its columns, which halves the matrix-product work.
There the distance of a pair is computed as ``(|a|^2 + |b|^2) - 2 a.b`` (``1 - u_a.u_b``
for cosine), a formula that is symmetric in floating point, so both directions of a pair
see the same number and exact ties (duplicate items) are ordered by index exactly as in
the general path. Its values may differ from the general path's in the last bits (a
different rounding order), so the two paths agree on every top-k list up to pairs closer
than that rounding.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from embedlab.errors import EmbedlabError
from embedlab.retrieval.distance import Metric, augment, auto_chunk_size, check_metric
from embedlab.retrieval.exclusion import exclusion_matchers
from embedlab.retrieval.symmetric import knn_symmetric
from embedlab.retrieval.topk import finish_distances, query_chunks, topk_stable

__all__ = ["check_knn_inputs", "is_symmetric", "knn"]


def knn(
    queries: Tensor,
    gallery: Tensor,
    k: int,
    *,
    metric: Metric = "euclidean",
    chunk_size: int | None = None,
    query_ids: Tensor | None = None,
    gallery_ids: Tensor | None = None,
    query_sequence: Tensor | None = None,
    gallery_sequence: Tensor | None = None,
    progress: bool = False,
    symmetric: bool | None = None,
) -> tuple[Tensor, Tensor]:
    """Exact k nearest gallery items of every query, never holding the full distance matrix.

    Runs on the device of ``queries`` (CPU or GPU) and returns tensors there.

    Distances: ``euclidean`` is :math:`\\|q-g\\|_2`; ``cosine`` is :math:`1-\\cos(q, g)`.
    A gallery item is excluded for a query when ``gallery_ids[j] == query_ids[i]`` (the
    query itself) or when both carry the same sequence code ``>= 0`` (``-1`` means "no
    sequence"). Rows with fewer than ``k`` admissible items are padded with
    ``distance=inf`` and ``index=-1``. Ties are ordered by gallery index ascending (see
    the module docstring).

    Args:
        queries: ``[Q, D]`` query embeddings.
        gallery: ``[G, D]`` gallery embeddings.
        k: neighbours per query (may exceed ``G``; the surplus is padding).
        metric: ``"euclidean"`` or ``"cosine"``.
        chunk_size: query rows per block (the side of the square tiles on the symmetric
            path); ``None`` picks it from a 256 MiB budget.
        progress: show a progress bar over the query chunks.
        symmetric: use the symmetric path (queries are the gallery). ``None`` (default)
            detects it: ``queries is gallery`` and ids and sequence codes are equal on
            both sides. ``True`` requires it, ``False`` forces the general path.
        query_ids, gallery_ids: integer ids, ``[Q]`` and ``[G]``, for self-exclusion.
        query_sequence, gallery_sequence: integer sequence codes, ``-1`` for none.

    Returns:
        ``(distances [Q, k] float32, indices [Q, k] int64)``, indices into ``gallery``.

    Example:
        >>> g = torch.tensor([[0.0], [1.0], [1.0], [5.0]])
        >>> q = torch.tensor([[1.0], [0.0]])
        >>> d, i = knn(q, g, k=3, query_ids=torch.tensor([1, 9]), gallery_ids=torch.arange(4))
        >>> i
        tensor([[2, 0, 3],
                [0, 1, 2]])
        >>> d
        tensor([[0., 1., 4.],
                [0., 1., 1.]])
        >>> knn(q[:1], g[:2], k=3)[1]
        tensor([[ 1,  0, -1]])
    """
    check_knn_inputs(queries, gallery, k, metric, chunk_size)
    symmetric_problem = is_symmetric(
        queries, gallery, query_ids, gallery_ids, query_sequence, gallery_sequence
    )
    if symmetric and not symmetric_problem:
        raise EmbedlabError(
            "knn(symmetric=True): queries must be the gallery tensor, with equal ids and "
            "sequence codes on both sides"
        )
    if symmetric_problem and symmetric is not False:
        n_items = queries.shape[0]
        exclusions = exclusion_matchers(
            query_ids, query_ids, query_sequence, query_sequence, n_items, n_items
        )
        return knn_symmetric(queries, k, metric, chunk_size, exclusions, progress=progress)
    n_queries, n_gallery = queries.shape[0], gallery.shape[0]
    device = queries.device
    out_dist = torch.full((n_queries, k), math.inf, dtype=torch.float32, device=device)
    out_idx = torch.full((n_queries, k), -1, dtype=torch.int64, device=device)
    if n_queries == 0 or n_gallery == 0:
        return out_dist, out_idx

    g_aug = augment(gallery.detach().to(device, torch.float32), metric, side="gallery")
    exclusions = exclusion_matchers(
        query_ids, gallery_ids, query_sequence, gallery_sequence, n_queries, n_gallery
    )
    rows_per_chunk = chunk_size or auto_chunk_size(n_gallery)
    k_eff = min(k, n_gallery)
    for rows in query_chunks(n_queries, rows_per_chunk, progress):
        # One GEMM yields the full distance (squared for euclidean) thanks to augmentation.
        chunk = queries[rows].detach().to(torch.float32)
        block = augment(chunk, metric, side="query") @ g_aug.T
        for matcher in exclusions:
            matcher.mask_out(block, rows.start, rows.stop)
        dist, idx = finish_distances(*topk_stable(block, k_eff), metric)
        out_dist[rows, :k_eff] = dist
        out_idx[rows, :k_eff] = idx
        del block  # before the next GEMM allocates its own: one block alive at a time
    return out_dist, out_idx


def check_knn_inputs(
    queries: Tensor, gallery: Tensor, k: int, metric: str, chunk_size: int | None
) -> None:
    """One-line errors for bad :func:`knn` arguments.

    >>> check_knn_inputs(torch.zeros(2, 3), torch.zeros(4, 3), 1, "cosine", None)
    """
    check_metric(metric, "knn")
    if queries.ndim != 2 or gallery.ndim != 2 or queries.shape[1] != gallery.shape[1]:
        raise EmbedlabError(
            f"knn: expected [Q, D] queries and [G, D] gallery, got {tuple(queries.shape)} "
            f"and {tuple(gallery.shape)}"
        )
    if k < 1:
        raise EmbedlabError(f"knn: k must be >= 1, got {k}")
    if chunk_size is not None and chunk_size < 1:
        raise EmbedlabError(f"knn: chunk_size must be >= 1 or None, got {chunk_size}")


def is_symmetric(
    queries: Tensor,
    gallery: Tensor,
    query_ids: Tensor | None,
    gallery_ids: Tensor | None,
    query_sequence: Tensor | None,
    gallery_sequence: Tensor | None,
) -> bool:
    """Whether the kNN problem is symmetric: the same items on both sides.

    >>> x, none = torch.zeros(2, 1), [None] * 4
    >>> is_symmetric(x, x, *none), is_symmetric(x, x.clone(), *none)
    (True, False)
    """

    def same(a: Tensor | None, b: Tensor | None) -> bool:
        if a is None or b is None:
            return a is None and b is None
        return a is b or (a.shape == b.shape and bool(torch.equal(a, b.to(a.device))))

    return (
        queries is gallery
        and same(query_ids, gallery_ids)
        and same(query_sequence, gallery_sequence)
    )
