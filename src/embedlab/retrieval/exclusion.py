"""The pairs a query may not match: itself (equal ids) and its sequence (equal codes >= 0).

One definition for every search: :func:`~embedlab.retrieval.knn.knn`, its symmetric path,
FNMR@FMR's pair blocks and :func:`~embedlab.metrics.functions.count_relevant`'s rule.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from embedlab.errors import EmbedlabError

__all__ = ["KeyMatcher", "exclusion_matchers"]


def exclusion_matchers(
    query_ids: Tensor | None,
    gallery_ids: Tensor | None,
    query_sequence: Tensor | None,
    gallery_sequence: Tensor | None,
    n_queries: int,
    n_gallery: int,
) -> list[KeyMatcher]:
    """The pairs that are not admissible: the query itself (equal ids) and its sequence
    (equal codes ``>= 0``). A matcher is inactive when one of its sides is None.

    >>> ids = torch.arange(3)
    >>> [m.active for m in exclusion_matchers(ids, ids, None, None, 3, 3)]
    [True, False]
    """
    return [
        KeyMatcher(
            query_ids, gallery_ids, "query_ids", n_queries, n_gallery, ignore_negative=False
        ),
        KeyMatcher(
            query_sequence, gallery_sequence, "sequence", n_queries, n_gallery, ignore_negative=True
        ),
    ]


class KeyMatcher:
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
