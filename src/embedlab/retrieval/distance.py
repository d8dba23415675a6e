"""Pairwise distances and exact, chunked k-nearest-neighbour search.

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
distance matrix is symmetric and `knn` tiles its upper triangle instead: each
``chunk x chunk`` block is computed once and feeds the top k of its rows *and* of its
columns, which halves the matrix-product work. There the distance of a pair is computed
as ``(|a|^2 + |b|^2) - 2 a.b`` (``1 - u_a.u_b`` for cosine), a formula that is
symmetric in floating point, so both directions of a pair see the same number and exact
ties (duplicate items) are ordered by index exactly as in the general path. Its values
may differ from the general path's in the last bits (a different rounding order), so
the two paths agree on every top-k list up to pairs closer than that rounding. The
running top k of each row is merged block by block; once a row has k candidates, a
block entry is looked at only when it is ``<=`` the row's current k-th distance, so
most of the cost left is the matrix product itself.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from embedlab.errors import EmbedlabError

__all__ = ["DEFAULT_CHUNK_BYTES", "METRICS", "augment", "auto_chunk_size", "knn", "pairwise_dist"]

Metric = Literal["euclidean", "cosine"]
METRICS: tuple[str, ...] = ("euclidean", "cosine")

#: Memory budget for one chunk's ``chunk x gallery`` float32 distance block.
DEFAULT_CHUNK_BYTES = 256 * 2**20


def pairwise_dist(
    x1: Tensor,
    x2: Tensor,
    metric: Metric = "euclidean",
    *,
    exact: bool = False,
    paired: bool = False,
    squared: bool = False,
) -> Tensor:
    """Distances between the rows of ``x1`` and ``x2``: the one distance of the library.

    Losses, miners, the chunked :func:`knn` and the indexes all measure with it, so
    ``euclidean`` (:math:`\\|a-b\\|_2`) and ``cosine`` (:math:`1-\\cos(a, b)`) mean the
    same everywhere.

    Args:
        x1: ``[N, D]`` tensor.
        x2: ``[M, D]`` tensor (``[N, D]`` with ``paired``).
        metric: ``"euclidean"`` or ``"cosine"``.
        exact: compute each distance from the difference vector (``vector_norm(a - b)``)
            instead of one matrix product. Exact for near-identical rows, where the
            product form loses digits to cancellation, but it holds ``N x M x D`` values:
            meant for batches (miners), not for search.
        paired: row ``i`` of ``x1`` against row ``i`` of ``x2`` only; returns ``[N]``
            (always exact: no matrix product to save).
        squared: squared euclidean distances (what top-k search ranks by).

    Returns:
        ``[N, M]`` distances (``[N]`` with ``paired``). The product form clamps round-off
        at 0 and has a zero (not NaN) gradient where a distance is 0, so it is safe
        inside a loss.

    Example:
        >>> a = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
        >>> pairwise_dist(a, a)
        tensor([[0., 5.],
                [5., 0.]])
        >>> pairwise_dist(a, a.flip(0), paired=True)
        tensor([5., 5.])
        >>> pairwise_dist(a, torch.tensor([[1.0, 0.0]]), metric="cosine")
        tensor([[1.0000],
                [0.4000]])
    """
    _check_metric(metric, "pairwise_dist")
    if x1.ndim != 2 or x2.ndim != 2 or x1.shape[1] != x2.shape[1]:
        raise EmbedlabError(
            f"pairwise_dist: expected [N, D] and [M, D] tensors, got {tuple(x1.shape)} "
            f"and {tuple(x2.shape)}"
        )
    if paired or exact:
        if paired and x1.shape != x2.shape:
            raise EmbedlabError(
                f"pairwise_dist(paired=True): shapes differ, {tuple(x1.shape)} and "
                f"{tuple(x2.shape)}"
            )
        a, b = (x1, x2) if paired else (x1[:, None, :], x2[None, :, :])
        if metric == "cosine":
            return 1 - F.cosine_similarity(a, b, dim=-1)
        dist = torch.linalg.vector_norm(a - b, dim=-1)
        return dist.square() if squared else dist
    block = augment(x1, metric, side="query") @ augment(x2, metric, side="gallery").T
    if metric == "cosine":
        return block
    positive = block > 0
    if squared:
        return block * positive
    # sqrt'(0) is infinite: feed 1 where the distance is 0 and mask it out, so the
    # gradient there is exactly 0 instead of NaN.
    return torch.where(positive, block, torch.ones_like(block)).sqrt() * positive


def _check_metric(metric: str, where: str) -> None:
    if metric not in METRICS:
        raise EmbedlabError(f"{where}: metric must be one of {METRICS}, got {metric!r}")


def auto_chunk_size(n_gallery: int, budget_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """Number of query rows whose float32 distance block to the gallery fits the budget.

    Example:
        >>> auto_chunk_size(100_000)
        671
        >>> auto_chunk_size(10**12)
        1
    """
    return max(1, budget_bytes // (4 * max(1, n_gallery)))


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
    _check_knn_inputs(queries, gallery, k, metric, chunk_size)
    is_symmetric = _is_symmetric(
        queries, gallery, query_ids, gallery_ids, query_sequence, gallery_sequence
    )
    if symmetric and not is_symmetric:
        raise EmbedlabError(
            "knn(symmetric=True): queries must be the gallery tensor, with equal ids and "
            "sequence codes on both sides"
        )
    if is_symmetric and symmetric is not False:
        return _knn_symmetric(
            queries, k, metric, chunk_size, query_ids, query_sequence, progress=progress
        )
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
    starts = range(0, n_queries, rows_per_chunk)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="kNN", unit="chunk", leave=False)
    for start in starts:
        stop = min(start + rows_per_chunk, n_queries)
        # One GEMM yields the full distance (squared for euclidean) thanks to augmentation.
        chunk = queries[start:stop].detach().to(torch.float32)
        block = augment(chunk, metric, side="query") @ g_aug.T
        for matcher in exclusions:
            matcher.mask_out(block, start, stop)
        dist, idx = _topk_stable(block, k_eff)
        # Round-off can make a distance slightly negative; euclidean ones were squared.
        dist = dist.clamp_(min=0)
        if metric == "euclidean":
            dist = dist.sqrt_()
        idx[torch.isinf(dist)] = -1
        out_dist[start:stop, :k_eff] = dist
        out_idx[start:stop, :k_eff] = idx
        del block  # before the next GEMM allocates its own: one block alive at a time
    return out_dist, out_idx


def _check_knn_inputs(
    queries: Tensor, gallery: Tensor, k: int, metric: str, chunk_size: int | None
) -> None:
    _check_metric(metric, "knn")
    if queries.ndim != 2 or gallery.ndim != 2 or queries.shape[1] != gallery.shape[1]:
        raise EmbedlabError(
            f"knn: expected [Q, D] queries and [G, D] gallery, got {tuple(queries.shape)} "
            f"and {tuple(gallery.shape)}"
        )
    if k < 1:
        raise EmbedlabError(f"knn: k must be >= 1, got {k}")
    if chunk_size is not None and chunk_size < 1:
        raise EmbedlabError(f"knn: chunk_size must be >= 1 or None, got {chunk_size}")


def augment(x: Tensor, metric: str, *, side: Literal["query", "gallery"]) -> Tensor:
    """Append columns so that ``augment(q, "query") @ augment(g, "gallery").T`` is the distance.

    Euclidean: ``[q, |q|^2, 1] . [-2g, 1, |g|^2] = |q - g|^2`` (squared).
    Cosine: ``[q/|q|, 1] . [-g/|g|, 1] = 1 - cos(q, g)``.
    The matrix-product form of :func:`pairwise_dist`; :func:`knn` and the exact index
    augment their gallery once and reuse it for every block of queries.

    >>> g = augment(torch.tensor([[3.0, 4.0]]), "euclidean", side="gallery")
    >>> augment(torch.zeros(1, 2), "euclidean", side="query") @ g.T
    tensor([[25.]])
    """
    ones = torch.ones(x.shape[0], 1, device=x.device, dtype=x.dtype)
    if metric == "cosine":
        x = F.normalize(x, dim=1)
        return torch.cat([x if side == "query" else -x, ones], dim=1)
    norm = x.pow(2).sum(dim=1, keepdim=True)
    if side == "query":
        return torch.cat([x, norm, ones], dim=1)
    return torch.cat([-2 * x, ones, norm], dim=1)


def exclusion_matchers(
    query_ids: Tensor | None,
    gallery_ids: Tensor | None,
    query_sequence: Tensor | None,
    gallery_sequence: Tensor | None,
    n_queries: int,
    n_gallery: int,
) -> list[_KeyMatcher]:
    """The pairs that are not admissible: the query itself (equal ids) and its sequence
    (equal codes ``>= 0``), as :func:`knn` excludes them. Inactive when a side is None."""
    return [
        _KeyMatcher(
            query_ids, gallery_ids, "query_ids", n_queries, n_gallery, ignore_negative=False
        ),
        _KeyMatcher(
            query_sequence, gallery_sequence, "sequence", n_queries, n_gallery, ignore_negative=True
        ),
    ]


class _KeyMatcher:
    """Finds (query row, gallery column) pairs whose integer keys are equal.

    The gallery keys are sorted once; each query's matches are a contiguous run in that
    order, so the work is proportional to the number of matching pairs, not ``Q x G``.
    """

    def __init__(
        self,
        query_keys: Tensor | None,
        gallery_keys: Tensor | None,
        name: str,
        n_queries: int,
        n_gallery: int,
        *,
        ignore_negative: bool,
    ) -> None:
        self.active = query_keys is not None and gallery_keys is not None
        if (query_keys is None) != (gallery_keys is None):
            raise EmbedlabError(f"knn: pass both query and gallery {name}, or neither")
        if not self.active:
            return
        assert query_keys is not None and gallery_keys is not None
        if query_keys.shape != (n_queries,) or gallery_keys.shape != (n_gallery,):
            raise EmbedlabError(
                f"knn: {name} must have shapes [{n_queries}] and [{n_gallery}], got "
                f"{tuple(query_keys.shape)} and {tuple(gallery_keys.shape)}"
            )
        self.query_keys = query_keys.to(torch.int64)
        self.gallery_keys = gallery_keys.to(self.query_keys.device, torch.int64)
        self.ignore_negative = ignore_negative
        self.sorted_keys, self.order = torch.sort(self.gallery_keys, stable=True)

    def count_pairs(self, start: int, stop: int) -> tuple[Tensor, Tensor, Tensor]:
        """Per query row in ``start:stop``: (keys, first match in sorted order, matches)."""
        keys = self.query_keys[start:stop]
        lo = torch.searchsorted(self.sorted_keys, keys, side="left")
        hi = torch.searchsorted(self.sorted_keys, keys, side="right")
        counts = hi - lo
        if self.ignore_negative:
            counts[keys < 0] = 0
        return keys, lo, counts

    def pairs(self, start: int, stop: int) -> tuple[Tensor, Tensor]:
        """``(rows - start, gallery columns)`` of every matching pair in rows ``start:stop``."""
        keys, lo, counts = self.count_pairs(start, stop)
        n_pairs = int(counts.sum())
        device = keys.device
        rows = torch.repeat_interleave(torch.arange(keys.shape[0], device=device), counts)
        run_starts = torch.repeat_interleave(lo, counts)
        first_of_row = torch.cumsum(counts, dim=0) - counts
        offsets = torch.arange(n_pairs, device=device) - torch.repeat_interleave(
            first_of_row, counts
        )
        return rows, self.order[run_starts + offsets]

    def dense(self, start: int, stop: int, cols: slice = slice(None)) -> Tensor:
        """``[stop - start, n_cols]`` bool: the matching pairs as a dense mask."""
        keys = self.query_keys[start:stop]
        match = keys.unsqueeze(1) == self.gallery_keys[cols].unsqueeze(0)
        if self.ignore_negative:
            match &= (keys >= 0).unsqueeze(1)
        return match

    def mask_out(self, block: Tensor, start: int, stop: int) -> None:
        """Set ``block[i - start, j] = inf`` for every matching pair in rows ``start:stop``."""
        if not self.active:
            return
        n_pairs = int(self.count_pairs(start, stop)[2].sum())
        if n_pairs == 0:
            return
        if n_pairs > block.numel() // 4:
            # Huge groups: a dense comparison is cheaper than materialising the pairs.
            block.masked_fill_(self.dense(start, stop).to(block.device), math.inf)
            return
        rows, cols = self.pairs(start, stop)
        block[rows.to(block.device), cols.to(block.device)] = math.inf


def _is_symmetric(
    queries: Tensor,
    gallery: Tensor,
    query_ids: Tensor | None,
    gallery_ids: Tensor | None,
    query_sequence: Tensor | None,
    gallery_sequence: Tensor | None,
) -> bool:
    """Whether the kNN problem is symmetric: the same items on both sides."""

    def same(a: Tensor | None, b: Tensor | None) -> bool:
        if a is None or b is None:
            return a is None and b is None
        return a is b or (a.shape == b.shape and bool(torch.equal(a, b.to(a.device))))

    return (
        queries is gallery
        and same(query_ids, gallery_ids)
        and same(query_sequence, gallery_sequence)
    )


def _knn_symmetric(
    items: Tensor,
    k: int,
    metric: str,
    chunk_size: int | None,
    ids: Tensor | None,
    sequence: Tensor | None,
    *,
    progress: bool,
) -> tuple[Tensor, Tensor]:
    from embedlab.retrieval.symmetric import knn_symmetric

    n_items = items.shape[0]
    exclusions = exclusion_matchers(ids, ids, sequence, sequence, n_items, n_items)
    return knn_symmetric(items, k, metric, chunk_size, exclusions, progress=progress)


def _topk_stable(block: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Row-wise k smallest values, ordered by (value, column) ascending.

    ``torch.topk`` picks arbitrarily among values tied at the k-th place. It is asked
    for k + 1 values; rows whose (k+1)-th value equals the k-th (a tie across the
    boundary) are redone exactly: every value below the k-th plus the leftmost columns
    equal to it.
    """
    n_cols = block.shape[1]
    probe = min(k + 1, n_cols)
    values, indices = torch.topk(block, probe, dim=1, largest=False, sorted=True)
    if probe > k:
        kth = values[:, k - 1]
        tied_rows = torch.nonzero((values[:, k] == kth) & torch.isfinite(kth)).squeeze(1)
        values, indices = values[:, :k].contiguous(), indices[:, :k].contiguous()
        # Bounded sub-batches: the exact path needs a few block-sized temporaries.
        step = max(1, block.shape[0] // 4)
        for start in range(0, tied_rows.shape[0], step):
            rows = tied_rows[start : start + step]
            cols = _leftmost_k_smallest(block[rows], kth[rows], k)
            indices[rows] = cols
            values[rows] = torch.gather(block[rows], 1, cols)
    return _sort_by_value_then_index(values, indices)


def _leftmost_k_smallest(sub: Tensor, kth: Tensor, k: int) -> Tensor:
    """Columns of the k smallest values per row, ties at ``kth`` resolved leftmost first."""
    threshold = kth.unsqueeze(1)
    below = sub < threshold
    need = k - below.sum(dim=1, keepdim=True)
    equal = sub == threshold
    rank_among_equal = torch.cumsum(equal, dim=1, dtype=torch.int32)
    keep = below | (equal & (rank_among_equal <= need))
    # nonzero is row-major, so each row yields exactly k columns in ascending order.
    return torch.nonzero(keep)[:, 1].view(sub.shape[0], k)


def _sort_by_value_then_index(values: Tensor, indices: Tensor) -> tuple[Tensor, Tensor]:
    by_index, perm = torch.sort(indices, dim=1)
    values = torch.gather(values, 1, perm)
    values, perm = torch.sort(values, dim=1, stable=True)
    return values, torch.gather(by_index, 1, perm)
