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

The verification threshold (:func:`choose_thresholds_chunked`) reads the same pairs. Its
rule: a pair *matches* when its distance is strictly below the threshold ``t``, so
``FMR(t)`` is the share of negative distances ``< t`` and ``FNMR(t)`` the share of
positive distances ``>= t`` (OML's FNMR). For a target rate ``f`` over ``N`` negative
distances, ``t`` is the largest value with ``FMR(t) <= f``: the order statistic of rank
``k = floor(f N)`` (0-based) of the negatives, so ties at ``t`` stay non-matches and the
achieved FMR is at most ``f`` (below it when negatives tie at ``t``). With ``k = N``
(``f = 1``) every negative matches: ``t`` is the next float32 above the largest one.
Unlike OML's ``fnmr@fmr`` (an interpolated quantile, not a threshold anyone can apply),
this threshold's FMR is what applying it gives.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch
from torch import Tensor

from embedlab.errors import EmbedlabError
from embedlab.retrieval.distance import auto_chunk_size, pairwise_dist
from embedlab.retrieval.exclusion import KeyMatcher, exclusion_matchers
from embedlab.retrieval.results import RetrievalResults
from embedlab.retrieval.topk import query_chunks

__all__ = [
    "ChosenThreshold",
    "ThresholdChoice",
    "calc_fnmr_at_fmr",
    "calc_fnmr_at_fmr_chunked",
    "choose_result_thresholds",
    "choose_thresholds",
    "choose_thresholds_chunked",
    "rates_at_threshold_chunked",
    "threshold_rank",
]

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
        # cosine distances of (near-)duplicates round to -1e-8: clamp, and + 0.0 turns -0.0
        # into 0.0, so that every distance sorts like its bit pattern
        dist = pairwise_dist(queries[rows].detach().to(torch.float32), g, metric)
        dist = dist.clamp_min(0.0) + 0.0
        admissible = torch.ones_like(dist, dtype=torch.bool)
        for matcher in exclusions:
            if matcher.active:
                admissible &= ~matcher.dense(rows.start, rows.stop).to(dist.device)
        same = query_labels[rows].unsqueeze(1) == gallery_labels.unsqueeze(0)
        yield dist, admissible & same, admissible & ~same


Blocks = Callable[[], Iterator[tuple[Tensor, Tensor, Tensor]]]
"""A fresh pass over the ``(distances, positive mask, negative mask)`` blocks."""


def _pair_blocks(
    queries: Tensor,
    gallery: Tensor,
    query_labels: Tensor,
    gallery_labels: Tensor,
    metric: str,
    chunk_size: int | None,
    query_ids: Tensor | None,
    gallery_ids: Tensor | None,
    query_sequence: Tensor | None,
    gallery_sequence: Tensor | None,
) -> Blocks:
    exclusions = exclusion_matchers(
        query_ids, gallery_ids, query_sequence, gallery_sequence, len(queries), len(gallery)
    )
    args = (queries, gallery, query_labels, gallery_labels, metric, chunk_size, exclusions)
    return lambda: _blocks(*args)


def _select_negatives(
    blocks: Blocks, ranks_of: Callable[[int], list[int]]
) -> tuple[Tensor, int, dict[int, float], dict[int, int]]:
    """Exact order statistics of the negative distances, in two passes (radix selection).

    ``ranks_of(n_neg)`` names the 0-based ranks wanted (each in ``[0, n_neg)``). Returns
    the positive distances (float32), the number of negatives, the value at each rank and
    how many negatives lie strictly below it (no ranks without a positive or a negative pair).
    """
    high_hist = torch.zeros(_BINS, dtype=torch.int64)
    positives = []
    for dist, pos, neg in blocks():
        positives.append(dist[pos].cpu())
        bits = dist[neg].view(torch.int32).cpu()
        high_hist += torch.bincount(bits >> 16, minlength=_BINS)
    pos_dist = torch.cat(positives)
    n_neg = int(high_hist.sum())
    if n_neg == 0 or pos_dist.numel() == 0:
        return pos_dist, n_neg, {}, {}
    ranks = sorted(set(ranks_of(n_neg)))
    cumulative = torch.cumsum(high_hist, dim=0)
    bucket_of = {r: int(torch.searchsorted(cumulative, r, right=True)) for r in ranks}
    buckets = sorted(set(bucket_of.values()))
    low_hist = {b: torch.zeros(_BINS, dtype=torch.int64) for b in buckets}
    bucket_tensor = torch.tensor(buckets, dtype=torch.int32)
    for dist, _, neg in blocks():
        bits = dist[neg].view(torch.int32).cpu()
        high = bits >> 16
        keep = torch.isin(high, bucket_tensor)
        bits, high = bits[keep], high[keep]
        for b in buckets:
            low_hist[b] += torch.bincount(bits[high == b] & 0xFFFF, minlength=_BINS)
    value, below = {}, {}
    for r in ranks:
        b = bucket_of[r]
        before = int(cumulative[b - 1]) if b > 0 else 0
        low_cumulative = torch.cumsum(low_hist[b], 0)
        low = int(torch.searchsorted(low_cumulative, r - before, right=True))
        bits = torch.tensor([(b << 16) | low], dtype=torch.int32)
        value[r] = float(bits.view(torch.float32))
        below[r] = before + (int(low_cumulative[low - 1]) if low > 0 else 0)
    return pos_dist, n_neg, value, below


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

    # np.quantile's "linear" method: ranks floor/ceil of (n - 1) f, 0-based.
    def ranks(n_neg: int) -> list[int]:
        positions = [(n_neg - 1) * float(f) for f in fmr_vals]
        return [r for p in positions for r in (math.floor(p), math.ceil(p))]

    selected = _select_negatives(
        _pair_blocks(queries, gallery, query_labels, gallery_labels, metric, chunk_size,
                     query_ids, gallery_ids, query_sequence, gallery_sequence),
        ranks,
    )  # fmt: skip
    pos_dist, n_neg, value, _ = selected
    if not value:
        return {}
    out = {}
    for f in fmr_vals:
        position = (n_neg - 1) * float(f)
        lo, hi = math.floor(position), math.ceil(position)
        # numpy's lerp, for the same rounding as np.quantile.
        a, b, t = value[lo], value[hi], position - lo
        threshold = b - (b - a) * (1 - t) if t >= 0.5 else a + (b - a) * t
        out[float(f)] = float((pos_dist.double() >= threshold).to(torch.float64).mean())
    return out


@dataclass(frozen=True)
class ChosenThreshold:
    """A verification threshold: a pair matches when its distance is ``< threshold``.

    Attributes:
        fmr_target: the false match rate it was chosen at.
        threshold: the largest distance whose FMR is at most ``fmr_target``.
        fmr: the false match rate it gives on the pairs it was chosen on (``<= fmr_target``).
        fnmr: the false non-match rate it gives there.
    """

    fmr_target: float
    threshold: float
    fmr: float
    fnmr: float


@dataclass(frozen=True)
class ThresholdChoice:
    """The thresholds chosen on some pairs, and how many pairs of each kind there were."""

    entries: tuple[ChosenThreshold, ...]
    n_positive: int
    n_negative: int


def threshold_rank(fmr_target: float, n_neg: int) -> int:
    """``floor(f N)``: the 0-based rank of the chosen threshold among ``N`` sorted negatives.

    The rate is read as the decimal it is written as (``0.29`` is 29/100, not the binary
    float just below), so ``0.29 x 100`` negatives allow 29, not 28.

    Example:
        >>> threshold_rank(0.29, 100), threshold_rank(0.001, 2999), threshold_rank(1.0, 7)
        (29, 2, 7)
    """
    return math.floor(Fraction(repr(float(fmr_target))) * n_neg)


def _threshold_at(rank: int, n_neg: int, value: dict[int, float]) -> float:
    """The threshold of a rank: its negative, or just above the largest for ``rank = N``."""
    if rank < n_neg:
        return value[rank]
    largest = np.float32(value[n_neg - 1])
    return float(np.nextafter(largest, np.float32(np.inf)))


def choose_thresholds(
    pos_dist: Tensor, neg_dist: Tensor, fmr_vals: Sequence[float]
) -> list[ChosenThreshold]:
    """The threshold of each false match rate on explicit distances (see the module doc).

    Example:
        >>> pos = torch.tensor([0.5, 1.0, 2.0, 4.0])
        >>> neg = torch.tensor([1.0, 2.0, 2.0, 3.0, 5.0])
        >>> # f = 0.2 allows 1 of 5 negatives below t: t = 2 (the tied 2s stay non-matches)
        >>> choose_thresholds(pos, neg, (0.2,))
        [ChosenThreshold(fmr_target=0.2, threshold=2.0, fmr=0.2, fnmr=0.5)]
        >>> choose_thresholds(pos, neg, (0.5,))[0].fmr  # 2 of 5 allowed, but 3 lie below 3
        0.2
    """
    _check_fmr(fmr_vals)
    neg = neg_dist.detach().to(torch.float32).flatten().cpu()
    pos = pos_dist.detach().to(torch.float32).flatten().cpu()
    if neg.numel() == 0 or pos.numel() == 0:
        return []
    ordered = torch.sort(neg).values
    value = {r: float(v) for r, v in enumerate(ordered.tolist())}
    out = []
    for f in fmr_vals:
        t = _threshold_at(threshold_rank(f, len(ordered)), len(ordered), value)
        fmr = float((neg < t).double().mean())
        out.append(ChosenThreshold(float(f), t, fmr, float((pos >= t).double().mean())))
    return out


def choose_thresholds_chunked(
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
) -> ThresholdChoice:
    """The threshold of each false match rate over every admissible pair, exactly and in
    bounded memory (the pairs of :func:`calc_fnmr_at_fmr_chunked`); equal to
    :func:`choose_thresholds` on the explicit distances. No thresholds without a positive
    or a negative pair.

    Example:
        >>> x = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
        >>> labels, ids = torch.tensor([0, 0, 1, 1]), torch.arange(4)
        >>> # positives 1, 1, 4, 4; negatives 2, 2, 3, 3, 6, 6, 7, 7
        >>> choice = choose_thresholds_chunked(x, x, labels, labels, (0.25,), chunk_size=3,
        ...                                    query_ids=ids, gallery_ids=ids)
        >>> choice.entries, choice.n_positive, choice.n_negative
        ((ChosenThreshold(fmr_target=0.25, threshold=3.0, fmr=0.25, fnmr=0.5),), 4, 8)
    """
    _check_fmr(fmr_vals)
    blocks = _pair_blocks(queries, gallery, query_labels, gallery_labels, metric, chunk_size,
                          query_ids, gallery_ids, query_sequence, gallery_sequence)  # fmt: skip

    def ranks(n_neg: int) -> list[int]:
        wanted = [threshold_rank(f, n_neg) for f in fmr_vals]
        return [min(r, n_neg - 1) for r in wanted]  # rank N reads the largest negative

    pos_dist, n_neg, value, below = _select_negatives(blocks, ranks)
    out = []
    if not value:
        return ThresholdChoice((), pos_dist.numel(), n_neg)
    for f in fmr_vals:
        rank = threshold_rank(f, n_neg)
        t = _threshold_at(rank, n_neg, value)
        n_below = below[rank] if rank < n_neg else n_neg
        fnmr = float((pos_dist >= t).to(torch.float64).mean())
        out.append(ChosenThreshold(float(f), t, n_below / n_neg, fnmr))
    return ThresholdChoice(tuple(out), pos_dist.numel(), n_neg)


def rates_at_threshold_chunked(
    queries: Tensor,
    gallery: Tensor,
    query_labels: Tensor,
    gallery_labels: Tensor,
    threshold: float,
    *,
    metric: str = "euclidean",
    chunk_size: int | None = None,
    query_ids: Tensor | None = None,
    gallery_ids: Tensor | None = None,
    query_sequence: Tensor | None = None,
    gallery_sequence: Tensor | None = None,
) -> dict[str, float]:
    """What a threshold gives on other pairs: ``fmr``, ``fnmr`` and the pair counts
    ``n_positive``, ``n_negative`` (a pair matches when its distance is ``< threshold``).

    Example:
        >>> x = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
        >>> labels, ids = torch.tensor([0, 0, 1, 1]), torch.arange(4)
        >>> rates_at_threshold_chunked(x, x, labels, labels, 3.0, query_ids=ids, gallery_ids=ids)
        {'fmr': 0.25, 'fnmr': 0.5, 'n_positive': 4, 'n_negative': 8}
    """
    blocks = _pair_blocks(queries, gallery, query_labels, gallery_labels, metric, chunk_size,
                          query_ids, gallery_ids, query_sequence, gallery_sequence)  # fmt: skip
    t = torch.tensor(threshold, dtype=torch.float32)
    n_pos = n_neg = false_matches = false_non_matches = 0
    for dist, pos, neg in blocks():
        n_pos += int(pos.sum())
        n_neg += int(neg.sum())
        false_matches += int((dist[neg] < t).sum())
        false_non_matches += int((dist[pos] >= t).sum())
    if n_pos == 0 or n_neg == 0:
        raise EmbedlabError(
            f"rates_at_threshold: {n_pos} positive and {n_neg} negative pairs: need both"
        )
    return {
        "fmr": false_matches / n_neg,
        "fnmr": false_non_matches / n_pos,
        "n_positive": n_pos,
        "n_negative": n_neg,
    }


def choose_result_thresholds(
    results: RetrievalResults, fmr_vals: Sequence[float]
) -> ThresholdChoice:
    """:func:`choose_thresholds_chunked` over the admissible pairs of a search (those of
    ``fnmr@fmr``: the query itself and its sequence left out).

    Example:
        >>> from embedlab.retrieval import QueryGallery, retrieve
        >>> qg = QueryGallery.from_columns(torch.tensor([[0.0], [1.0], [3.0], [7.0]]), [0, 0, 1, 1])
        >>> choose_result_thresholds(retrieve(qg, 1), (0.25,)).entries[0].threshold
        3.0
    """
    rates = tuple(float(f) for f in fmr_vals)
    return choose_thresholds_chunked(*results.pair_inputs(), rates, **results.search_options())
