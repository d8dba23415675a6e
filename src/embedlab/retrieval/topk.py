"""Building blocks of every exact search: stable top-k, the finishing step, the query chunks.

:func:`~embedlab.retrieval.knn.knn`, :class:`~embedlab.retrieval.index.ExactIndex`, the
symmetric path and FNMR@FMR's pair blocks all walk the queries in chunks
(:func:`query_chunks`), reduce a ``chunk x gallery`` block to its k smallest entries in
(distance, gallery index) order (:func:`topk_stable`) and turn the matrix-product values
into distances (:func:`finish_distances`). One definition of each keeps their arithmetic
and tie order identical.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

__all__ = [
    "finish_distances",
    "leftmost_k_smallest",
    "query_chunks",
    "sort_by_value_then_index",
    "topk_stable",
]


def query_chunks(n_queries: int, rows_per_chunk: int, progress: bool = False) -> Iterator[slice]:
    """Slices of ``rows_per_chunk`` query rows covering ``0:n_queries`` (a bar with ``progress``).

    >>> [(s.start, s.stop) for s in query_chunks(5, 2)]
    [(0, 2), (2, 4), (4, 5)]
    """
    starts = range(0, n_queries, rows_per_chunk)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="kNN", unit="chunk", leave=False)
    for start in starts:
        yield slice(start, min(start + rows_per_chunk, n_queries))


def finish_distances(values: Tensor, indices: Tensor, metric: str) -> tuple[Tensor, Tensor]:
    """Matrix-product values to distances, in place: clamp round-off below 0, take the
    square root for euclidean (the products are squared distances), and mark excluded
    entries (``inf``) with index ``-1``.

    >>> d, i = finish_distances(torch.tensor([[-1e-7, 4.0, float("inf")]]),
    ...                         torch.tensor([[3, 1, 0]]), "euclidean")
    >>> d.tolist(), i.tolist()
    ([[0.0, 2.0, inf]], [[3, 1, -1]])
    """
    values = values.clamp_(min=0)
    if metric == "euclidean":
        values = values.sqrt_()
    indices[torch.isinf(values)] = -1
    return values, indices


def topk_stable(block: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Row-wise k smallest values, ordered by (value, column) ascending.

    ``torch.topk`` picks arbitrarily among values tied at the k-th place. It is asked
    for k + 1 values; rows whose (k+1)-th value equals the k-th (a tie across the
    boundary) are redone exactly: every value below the k-th plus the leftmost columns
    equal to it.

    >>> topk_stable(torch.tensor([[2.0, 1.0, 1.0, 1.0]]), 2)
    (tensor([[1., 1.]]), tensor([[1, 2]]))
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
            cols = leftmost_k_smallest(block[rows], kth[rows], k)
            indices[rows] = cols
            values[rows] = torch.gather(block[rows], 1, cols)
    return sort_by_value_then_index(values, indices)


def leftmost_k_smallest(sub: Tensor, kth: Tensor, k: int) -> Tensor:
    """Columns of the k smallest values per row, ties at ``kth`` resolved leftmost first.

    >>> leftmost_k_smallest(torch.tensor([[3.0, 1.0, 3.0, 3.0]]), torch.tensor([3.0]), 3)
    tensor([[0, 1, 2]])
    """
    threshold = kth.unsqueeze(1)
    below = sub < threshold
    need = k - below.sum(dim=1, keepdim=True)
    equal = sub == threshold
    rank_among_equal = torch.cumsum(equal, dim=1, dtype=torch.int32)
    keep = below | (equal & (rank_among_equal <= need))
    # nonzero is row-major, so each row yields exactly k columns in ascending order.
    return torch.nonzero(keep)[:, 1].view(sub.shape[0], k)


def sort_by_value_then_index(values: Tensor, indices: Tensor) -> tuple[Tensor, Tensor]:
    """Sort each row by value, ties by index (both ascending).

    >>> sort_by_value_then_index(torch.tensor([[1.0, 0.0, 1.0]]), torch.tensor([[7, 9, 2]]))
    (tensor([[0., 1., 1.]]), tensor([[9, 2, 7]]))
    """
    by_index, perm = torch.sort(indices, dim=1)
    values = torch.gather(values, 1, perm)
    values, perm = torch.sort(values, dim=1, stable=True)
    return values, torch.gather(by_index, 1, perm)
