"""FNMR@FMR (OML's verification metric), exact and in bounded memory.

OML's definition: the threshold for a false match rate ``f`` is the ``f``-quantile of the
negative distances (``np.quantile``, linear interpolation); FNMR is the share of positive
distances ``>=`` that threshold. Positive pairs are admissible (query, gallery) pairs with
the same label, negative ones the admissible pairs with different labels (the query
itself and its sequence are not admissible, as everywhere).

There are ``Q x G`` negative distances, far too many to hold. The quantile is found
exactly by a two-pass radix selection over the chunked distance matrix: non-negative
float32 values sort like their bit patterns, so pass 1 histograms the high 16 bits of
every negative distance (65,536 bins), which locates the bucket of each needed order
statistic, and pass 2 histograms the low 16 bits inside those buckets only, which gives
the order statistic bit for bit. Positive distances (one per relevant pair) are kept.
Memory: two 65,536-bin histograms, the positives and one distance block.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from embedlab.errors import EmbedlabError
from embedlab.retrieval.distance import auto_chunk_size, pairwise_dist
from embedlab.retrieval.exclusion import KeyMatcher, exclusion_matchers
from embedlab.retrieval.topk import query_chunks

__all__ = ["calc_fnmr_at_fmr", "calc_fnmr_at_fmr_chunked"]

_BINS = 1 << 16


def calc_fnmr_at_fmr(pos_dist: Tensor, neg_dist: Tensor, fmr_vals: Sequence[float]) -> dict:
    """OML's ``calc_fnmr_at_fmr`` on explicit distances (for small inputs and as a reference).

    Example:
        >>> pos = torch.tensor([0.0, 0, 1, 1, 2, 2, 5, 5, 9, 9])
        >>> neg = torch.tensor([3.0, 3, 4, 4, 6, 6, 7, 7, 8, 8])
        >>> calc_fnmr_at_fmr(pos, neg, (0.1, 0.5))
        {0.1: 0.4, 0.5: 0.2}
    """
    _check_fmr(fmr_vals)
    thresholds = np.quantile(neg_dist.double().numpy(), list(fmr_vals))
    pos = pos_dist.double().numpy()
    return {float(f): float((pos >= t).mean()) for f, t in zip(fmr_vals, thresholds, strict=True)}


def _check_fmr(fmr_vals: Sequence[float]) -> None:
    if not all(0.0 <= f <= 1.0 for f in fmr_vals):
        raise EmbedlabError(f"fnmr_fmr: false match rates must be in [0, 1], got {tuple(fmr_vals)}")


def _blocks(
    queries: Tensor,
    gallery: Tensor,
    query_labels: Tensor,
    gallery_labels: Tensor,
    metric: str,
    chunk_size: int | None,
    exclusions: list[KeyMatcher],
) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """Yield ``(distances, positive mask, negative mask)`` per chunk of query rows."""
    g = gallery.detach().to(torch.float32)
    for rows in query_chunks(queries.shape[0], chunk_size or auto_chunk_size(gallery.shape[0])):
        dist = pairwise_dist(queries[rows].detach().to(torch.float32), g, metric) + 0.0
        admissible = torch.ones_like(dist, dtype=torch.bool)
        for matcher in exclusions:
            if matcher.active:
                admissible &= ~matcher.dense(rows.start, rows.stop).to(dist.device)
        same = query_labels[rows].unsqueeze(1) == gallery_labels.unsqueeze(0)
        yield dist, admissible & same, admissible & ~same


def calc_fnmr_at_fmr_chunked(
    queries: Tensor,
    gallery: Tensor,
    query_labels: Tensor,
    gallery_labels: Tensor,
    fmr_vals: Sequence[float],
    *,
    metric: str = "euclidean",
    chunk_size: int | None = None,
    query_ids: Tensor | None = None,
    gallery_ids: Tensor | None = None,
    query_sequence: Tensor | None = None,
    gallery_sequence: Tensor | None = None,
    progress: bool = False,
) -> dict[float, float]:
    """FNMR at each false match rate, exact, over all admissible pairs, never ``Q x G`` at once.

    Equal to :func:`calc_fnmr_at_fmr` on the explicit positive and negative distances.
    Rates with no positive or no negative pair are left out (never NaN).

    Example:
        >>> x = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
        >>> labels = torch.tensor([0, 0, 1, 1])
        >>> ids = torch.arange(4)
        >>> # positives 1, 1, 4, 4; negatives 2, 2, 3, 3, 6, 6, 7, 7: thresholds 2 and 4.5
        >>> calc_fnmr_at_fmr_chunked(x, x, labels, labels, (0.0, 0.5), chunk_size=3,
        ...                          query_ids=ids, gallery_ids=ids)
        {0.0: 0.5, 0.5: 0.0}
    """
    del progress
    _check_fmr(fmr_vals)
    exclusions = exclusion_matchers(
        query_ids, gallery_ids, query_sequence, gallery_sequence, len(queries), len(gallery)
    )
    args = (queries, gallery, query_labels, gallery_labels, metric, chunk_size, exclusions)
    high_hist = torch.zeros(_BINS, dtype=torch.int64)
    positives = []
    for dist, pos, neg in _blocks(*args):
        positives.append(dist[pos].cpu())
        bits = dist[neg].view(torch.int32).cpu()
        high_hist += torch.bincount(bits >> 16, minlength=_BINS)
    pos_dist = torch.cat(positives).double()
    n_neg = int(high_hist.sum())
    if n_neg == 0 or pos_dist.numel() == 0:
        return {}
    # np.quantile's "linear" method: ranks floor/ceil of (n - 1) f, 0-based.
    wanted = {}
    for f in fmr_vals:
        position = (n_neg - 1) * float(f)
        wanted[float(f)] = (position, math.floor(position), math.ceil(position))
    ranks = sorted({r for _, lo, hi in wanted.values() for r in (lo, hi)})
    cumulative = torch.cumsum(high_hist, dim=0)
    bucket_of = {r: int(torch.searchsorted(cumulative, r, right=True)) for r in ranks}
    buckets = sorted(set(bucket_of.values()))
    low_hist = {b: torch.zeros(_BINS, dtype=torch.int64) for b in buckets}
    bucket_tensor = torch.tensor(buckets, dtype=torch.int32)
    for dist, _, neg in _blocks(*args):
        bits = dist[neg].view(torch.int32).cpu()
        high = bits >> 16
        keep = torch.isin(high, bucket_tensor)
        bits, high = bits[keep], high[keep]
        for b in buckets:
            low_hist[b] += torch.bincount(bits[high == b] & 0xFFFF, minlength=_BINS)
    value = {}
    for r in ranks:
        b = bucket_of[r]
        before = int(cumulative[b - 1]) if b > 0 else 0
        low = int(torch.searchsorted(torch.cumsum(low_hist[b], 0), r - before, right=True))
        bits = torch.tensor([(b << 16) | low], dtype=torch.int32)
        value[r] = float(bits.view(torch.float32))
    out = {}
    for f, (position, lo, hi) in wanted.items():
        # numpy's lerp, for the same rounding as np.quantile.
        a, b, t = value[lo], value[hi], position - lo
        threshold = b - (b - a) * (1 - t) if t >= 0.5 else a + (b - a) * t
        out[f] = float((pos_dist >= threshold).to(torch.float64).mean())
    return out
