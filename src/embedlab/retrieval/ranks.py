"""The rank of every relevant gallery item in a query's full ranking (what ``map@all`` and
``mrr`` read).

The kNN keeps each query's first K neighbours (the *head*); full average precision
needs the rank of every relevant item, however far. :func:`relevant_ranks` walks the
queries in chunks like :func:`~embedlab.retrieval.knn.knn` (one ``chunk x gallery`` block
alive at a time, never the full matrix): relevant items in the head take their head
position; the rest of the gallery (the *tail*: admissible items not in the head) is
ordered by (distance, gallery index), the kNN's ordering contract, and follows the head.
Only the relevant items' places are needed, so no row is sorted: each row's relevant
distances are, and the other items are counted between them by binary search.
Taking the head as the kNN returned it keeps these ranks consistent with every top-k
metric even where another block shape would round a near-tie differently.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from embedlab.retrieval.distance import Metric, augment, auto_chunk_size
from embedlab.retrieval.exclusion import KeyMatcher, exclusion_matchers
from embedlab.retrieval.topk import query_chunks

__all__ = ["relevant_ranks"]

#: Bytes per block entry the pass holds: the block, its sort keys and their buckets.
_BYTES_PER_ENTRY = 4 + 8 + 8


def relevant_ranks(
    queries: Tensor,
    gallery: Tensor,
    query_labels: Tensor,
    gallery_labels: Tensor,
    head: Tensor,
    n_relevant: Tensor,
    *,
    metric: Metric = "euclidean",
    chunk_size: int | None = None,
    query_ids: Tensor | None = None,
    gallery_ids: Tensor | None = None,
    query_sequence: Tensor | None = None,
    gallery_sequence: Tensor | None = None,
) -> Tensor:
    """1-based ranks of each query's admissible relevant gallery items, ascending.

    Only the queries with a relevant item beyond the head are searched again.

    Args:
        queries, gallery: ``[Q, D]`` and ``[G, D]`` embeddings.
        query_labels, gallery_labels: ``[Q]`` and ``[G]``; relevant = same label.
        head: ``[Q, K]`` the kNN's first K neighbours (gallery indices, ``-1`` = none),
            as :func:`~embedlab.retrieval.knn.knn` returned them with the same
            exclusions.
        n_relevant: ``[Q]`` admissible relevant items of each query
            (:func:`~embedlab.retrieval.results.count_relevant`).
        metric, chunk_size, query_ids, gallery_ids, query_sequence, gallery_sequence:
            as for :func:`~embedlab.retrieval.knn.knn` (``chunk_size``: query rows per
            block; None picks it from a 256 MiB budget).

    Returns:
        ``[Q, R_max]`` int64, row i holding the ranks of query i's relevant items in
        ascending order, then zeros (R_max = the largest number of relevant items).

    Example:
        >>> g = torch.tensor([[0.0], [1.0], [2.0], [2.0], [5.0]])
        >>> labels = torch.tensor([0, 1, 0, 0, 0])
        >>> head = torch.tensor([[0, 1]])  # the kNN's top 2 of the query 0.1
        >>> q = torch.tensor([[0.1]])
        >>> relevant_ranks(q, g, torch.tensor([0]), labels, head, torch.tensor([4]))
        tensor([[1, 3, 4, 5]])
    """
    device = queries.device
    if gallery.shape[0] == 0:
        return torch.zeros(queries.shape[0], 0, dtype=torch.int64, device=device)
    head = head.to(device)
    query_labels, gallery_labels = query_labels.to(device), gallery_labels.to(device)
    found = head >= 0
    head_relevant = found & (gallery_labels[head.clamp(min=0)] == query_labels.unsqueeze(1))
    head_rows, head_cols = torch.nonzero(head_relevant, as_tuple=True)
    rows, ranks = [head_rows], [head_cols + 1]
    need = torch.nonzero(n_relevant.to(device) > head_relevant.sum(dim=1)).squeeze(1)
    if need.numel():
        exclusions = exclusion_matchers(
            None if query_ids is None else query_ids.to(device)[need],
            gallery_ids,
            None if query_sequence is None else query_sequence.to(device)[need],
            gallery_sequence,
            need.numel(),
            gallery.shape[0],
        )
        tail_rows, tail_ranks = _tail_pass(
            queries[need], gallery, query_labels[need], gallery_labels, head[need],
            metric, chunk_size, exclusions,
        )  # fmt: skip
        rows.append(need[tail_rows])
        ranks.append(tail_ranks + found.sum(dim=1)[need[tail_rows]])
    # Per row: head ranks (ascending, <= K) first, then tail ranks (ascending, > K).
    all_rows, by_row = torch.sort(torch.cat(rows), stable=True)
    return _pack(all_rows, torch.cat(ranks)[by_row], queries.shape[0])


def _tail_pass(
    queries: Tensor,
    gallery: Tensor,
    query_labels: Tensor,
    gallery_labels: Tensor,
    head: Tensor,
    metric: Metric,
    chunk_size: int | None,
    exclusions: list[KeyMatcher],
) -> tuple[Tensor, Tensor]:
    """``(rows, ranks)``: each query's relevant items beyond the head, ranked within the tail."""
    n_queries, n_gallery = queries.shape[0], gallery.shape[0]
    g_aug = augment(gallery.detach().to(queries.device, torch.float32), metric, side="gallery")
    same_label = KeyMatcher(
        query_labels, gallery_labels, "labels", n_queries, n_gallery, ignore_negative=False
    )
    budget = auto_chunk_size(n_gallery) * 4 // _BYTES_PER_ENTRY
    out_rows, out_ranks = [], []
    for rows in query_chunks(n_queries, chunk_size or max(1, budget)):
        block = augment(queries[rows].detach().to(torch.float32), metric, side="query") @ g_aug.T
        for matcher in exclusions:
            matcher.mask_out(block, rows.start, rows.stop)
        chunk_head = head[rows]
        # The head is not in the tail (padding points at the head's first column: a row
        # with padding holds every admissible item in its head and is not searched).
        block.scatter_(1, torch.where(chunk_head >= 0, chunk_head, chunk_head[:, :1]), math.inf)
        pair_rows, pair_cols = same_label.pairs(rows.start, rows.stop)
        tail = torch.isfinite(block[pair_rows, pair_cols])
        chunk_rows, ranks = _tail_ranks(block, pair_rows[tail], pair_cols[tail])
        out_rows.append(chunk_rows + rows.start)
        out_ranks.append(ranks)
        del block
    return torch.cat(out_rows), torch.cat(out_ranks)


def _tail_ranks(block: Tensor, rows: Tensor, cols: Tensor) -> tuple[Tensor, Tensor]:
    """``(rows, ranks)``: 1-based ranks of each row's relevant entries (``rows``/``cols``,
    rows ascending) among its finite entries ordered by (value, column); ranks ascending
    within a row.

    No row is sorted: the few relevant keys of each row are, and every entry is placed
    between them by binary search (``G log R`` per row, not ``G log G``); the rank of
    the j-th relevant key is the number of entries placed at or before it.
    """
    n_rows = block.shape[0]
    counts = torch.bincount(rows, minlength=n_rows)
    width = int(counts.max()) if rows.numel() else 0
    if width == 0:
        return rows, rows
    keys = _ordered_keys(block)
    slot = torch.arange(rows.numel(), device=rows.device) - (torch.cumsum(counts, 0) - counts)[rows]
    largest = torch.iinfo(torch.int64).max
    relevant_keys = torch.full((n_rows, width), largest, dtype=torch.int64, device=keys.device)
    relevant_keys[rows, slot] = keys[rows, cols]
    relevant_keys = torch.sort(relevant_keys, dim=1).values
    # bucket[x] = relevant keys below x's: the j-th relevant key has bucket j; excluded
    # and head entries (inf) land after the last one.
    bucket = torch.searchsorted(relevant_keys, keys)
    del keys
    offsets = torch.arange(n_rows, device=bucket.device).unsqueeze(1) * (width + 1)
    histogram = torch.bincount((bucket + offsets).view(-1), minlength=n_rows * (width + 1))
    at_or_before = torch.cumsum(histogram.view(n_rows, width + 1), dim=1)
    return rows, at_or_before[rows, slot]


def _ordered_keys(block: Tensor) -> Tensor:
    """int64 keys that sort like (float32 value, column): exact ties go by column.

    >>> _ordered_keys(torch.tensor([[0.5, -1.0, 0.5, 0.0, -0.0]])).argsort().tolist()
    [[1, 3, 4, 0, 2]]
    """
    keys = block.contiguous().view(torch.int32).to(torch.int64)
    # Non-negative floats order like their bit patterns; negative ones (round-off below
    # zero) in reverse.
    negative = keys < 0
    if bool(negative.any()):
        keys = torch.where(negative, -(keys & 0x7FFFFFFF), keys)
    return keys.mul_(block.shape[1]).add_(torch.arange(block.shape[1], device=block.device))


def _pack(rows: Tensor, ranks: Tensor, n_rows: int) -> Tensor:
    """``[n_rows, width]`` with each row's ranks in order, zero-padded (rows sorted)."""
    counts = torch.bincount(rows, minlength=n_rows)
    width = int(counts.max()) if counts.numel() else 0
    slot = torch.arange(rows.numel(), device=rows.device) - (torch.cumsum(counts, 0) - counts)[rows]
    out = torch.zeros(n_rows, width, dtype=torch.int64, device=ranks.device)
    out[rows, slot] = ranks
    return out
