"""The rank of every relevant gallery item in a query's full ranking (what ``map@all`` and
``mrr`` read).

The kNN keeps each query's first K neighbours (the *head*); full average precision
needs the rank of every relevant item, however far. :func:`relevant_ranks` walks the
queries in chunks like :func:`~embedlab.retrieval.knn.knn` (one ``chunk x gallery`` block
alive at a time, never the full matrix): relevant items in the head take their head
position; the rest of the gallery (the *tail*: admissible items not in the head) is
ordered by (distance, gallery index), the kNN's ordering contract, and follows the head.
Taking the head as the kNN returned it keeps these ranks consistent with every top-k
metric even where another block shape would round a near-tie differently.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from embedlab.retrieval.distance import Metric, augment, auto_chunk_size
from embedlab.retrieval.exclusion import exclusion_matchers
from embedlab.retrieval.topk import query_chunks

__all__ = ["relevant_ranks"]

#: Bytes per block entry the pass holds: the block, the sort's values and indices, two masks.
_BYTES_PER_ENTRY = 4 + 4 + 8 + 1 + 1


def relevant_ranks(
    queries: Tensor,
    gallery: Tensor,
    query_labels: Tensor,
    gallery_labels: Tensor,
    head: Tensor,
    *,
    metric: Metric = "euclidean",
    chunk_size: int | None = None,
    query_ids: Tensor | None = None,
    gallery_ids: Tensor | None = None,
    query_sequence: Tensor | None = None,
    gallery_sequence: Tensor | None = None,
) -> Tensor:
    """1-based ranks of each query's admissible relevant gallery items, ascending.

    Args:
        queries, gallery: ``[Q, D]`` and ``[G, D]`` embeddings.
        query_labels, gallery_labels: ``[Q]`` and ``[G]``; relevant = same label.
        head: ``[Q, K]`` the kNN's first K neighbours (gallery indices, ``-1`` = none),
            as :func:`~embedlab.retrieval.knn.knn` returned them with the same
            exclusions.
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
        >>> relevant_ranks(torch.tensor([[0.1]]), g, torch.tensor([0]), labels, head)
        tensor([[1, 3, 4, 5]])
    """
    n_queries, n_gallery = queries.shape[0], gallery.shape[0]
    device = queries.device
    if n_queries == 0 or n_gallery == 0:
        return torch.zeros(n_queries, 0, dtype=torch.int64, device=device)
    query_labels = query_labels.to(device)
    gallery_labels = gallery_labels.to(device)
    head = head.to(device)
    g_aug = augment(gallery.detach().to(device, torch.float32), metric, side="gallery")
    exclusions = exclusion_matchers(
        query_ids, gallery_ids, query_sequence, gallery_sequence, n_queries, n_gallery
    )
    budget = auto_chunk_size(n_gallery) * 4 // _BYTES_PER_ENTRY
    rows_per_chunk = chunk_size or max(1, budget)
    pieces = []
    for rows in query_chunks(n_queries, rows_per_chunk):
        block = augment(queries[rows].detach().to(torch.float32), metric, side="query") @ g_aug.T
        for matcher in exclusions:
            matcher.mask_out(block, rows.start, rows.stop)
        pieces.append(_chunk_ranks(block, head[rows], query_labels[rows], gallery_labels))
        del block
    width = max(piece.shape[1] for piece in pieces)
    return torch.cat([F.pad(piece, (0, width - piece.shape[1])) for piece in pieces])


def _chunk_ranks(
    block: Tensor, head: Tensor, query_labels: Tensor, gallery_labels: Tensor
) -> Tensor:
    """Ranks of one chunk's relevant items: head positions, then the sorted tail after them."""
    found = head >= 0
    head_relevant = found & (gallery_labels[head.clamp(min=0)] == query_labels.unsqueeze(1))
    head_rows, head_cols = torch.nonzero(head_relevant, as_tuple=True)
    # Out of the tail: the head (padding points at column 0 of the head, already masked;
    # a row whose head is all padding has no admissible item, its block is all inf).
    block.scatter_(1, torch.where(found, head, head[:, :1].clamp(min=0)), math.inf)
    tail_relevant = (gallery_labels.unsqueeze(0) == query_labels.unsqueeze(1)) & torch.isfinite(
        block
    )
    need = torch.nonzero(tail_relevant.any(dim=1)).squeeze(1)
    tail_rows, tail_ranks = need[:0], need[:0]
    if need.numel():
        # A stable sort orders equal distances by gallery index, as the kNN does.
        order = torch.sort(block[need], dim=1, stable=True).indices
        hit = torch.gather(tail_relevant[need], 1, order)
        sub_rows, positions = torch.nonzero(hit, as_tuple=True)
        tail_rows = need[sub_rows]
        tail_ranks = found.sum(dim=1)[tail_rows] + positions + 1
    rows = torch.cat([head_rows, tail_rows])
    ranks = torch.cat([head_cols + 1, tail_ranks])
    # Per row: head ranks (ascending, <= K) then tail ranks (ascending, > K).
    rows, by_row = torch.sort(rows, stable=True)
    ranks = ranks[by_row]
    counts = torch.bincount(rows, minlength=block.shape[0])
    width = int(counts.max()) if counts.numel() else 0
    column = (
        torch.arange(rows.numel(), device=rows.device) - (torch.cumsum(counts, 0) - counts)[rows]
    )
    out = torch.zeros(block.shape[0], width, dtype=torch.int64, device=block.device)
    out[rows, column] = ranks
    return out
