"""Scoring: pure functions from a :class:`RetrievalResults` to one :class:`MetricTable`.

``score(results, options)`` computes every per-query metric of the ranking (and of each
post-processed ranking, under ``<steps>/<metric>``), averages them over the valid
queries overall and per category, and adds PCF (over all items) and FNMR@FMR (over all
admissible pairs), which read the query/gallery value rather than the ranking.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from embedlab.errors import EmbedlabError
from embedlab.metrics.functions import (
    RETRIEVAL_METRICS,
    UnreducedMetrics,
    calc_full_ranking_metrics,
    calc_pcf,
    calc_r_metrics,
    calc_retrieval_metrics,
    check_top_k,
    group_unreduced_metrics,
    reduce_metrics,
)
from embedlab.metrics.names import OVERALL
from embedlab.metrics.table import MetricTable
from embedlab.metrics.verification import calc_fnmr_at_fmr_chunked
from embedlab.retrieval.query_gallery import QueryGallery, factorize
from embedlab.retrieval.results import RetrievalResults

__all__ = ["MetricOptions", "per_query_metrics", "score"]


@dataclass(frozen=True)
class MetricOptions:
    """Which metrics to compute (OML's keyword names).

    ``r_metrics`` adds ``map@R`` and ``r_precision`` (the search then keeps at least R
    neighbours); ``ndcg_top_k`` the cut-offs of ``ndcg@k``; ``full_ranking_metrics``
    adds ``map@all`` and ``mrr``, read from the ranks of every relevant item
    (``retrieve(..., full_ranking=True)``): they are reported for a ranking that
    carries those ranks, so not after a post-processor, which orders only its head.

    >>> MetricOptions(cmc_top_k=(1, 10), r_metrics=True).top_k
    10
    >>> MetricOptions(ndcg_top_k=(20,)).top_k
    20
    >>> MetricOptions(map_top_k=(0,))
    Traceback (most recent call last):
    ...
    embedlab.errors.EmbedlabError: map_top_k must hold positive integers, got (0,)
    """

    cmc_top_k: Sequence[int] = (1, 5)
    precision_top_k: Sequence[int] = (5,)
    map_top_k: Sequence[int] = (5,)
    pcf_variance: Sequence[float] = (0.5,)
    r_metrics: bool = False
    fnmr_fmr: Sequence[float] = ()
    ndcg_top_k: Sequence[int] = ()
    full_ranking_metrics: bool = False

    def __post_init__(self) -> None:
        check_top_k(self.cmc_top_k, "cmc_top_k")
        check_top_k(self.precision_top_k, "precision_top_k")
        check_top_k(self.map_top_k, "map_top_k")
        check_top_k(self.ndcg_top_k, "ndcg_top_k")
        for name in ("pcf_variance", "fnmr_fmr"):
            values = tuple(getattr(self, name))
            if not all(0.0 <= v <= 1.0 for v in values):
                raise EmbedlabError(f"{name} must hold numbers in [0, 1], got {values}")

    @property
    def top_k(self) -> int:
        """The largest cut-off of any metric (at least 1): what the search must keep."""
        cut_offs = (self.cmc_top_k, self.precision_top_k, self.map_top_k, self.ndcg_top_k)
        return max([*(k for ks in cut_offs for k in ks), 1])


def per_query_metrics(results: RetrievalResults, options: MetricOptions) -> UnreducedMetrics:
    """Every per-query metric of one ranking, over all its queries (invalid ones score 0).

    ``map@all`` and ``mrr`` need ``results.relevant_ranks``; without them (a
    post-processed ranking) they are left out.

    >>> qg = QueryGallery.from_columns(torch.tensor([[0.0], [1.0], [3.0]]), [0, 0, 1])
    >>> from embedlab.retrieval.results import retrieve
    >>> per_query_metrics(retrieve(qg, 2), MetricOptions((1,), (), (), ()))["cmc"]
    {1: tensor([1., 1., 0.])}
    """
    out: UnreducedMetrics = calc_retrieval_metrics(
        results.relevance,
        results.n_relevant,
        options.cmc_top_k,
        options.precision_top_k,
        options.map_top_k,
        options.ndcg_top_k,
    )
    if options.r_metrics:
        out.update(calc_r_metrics(results.relevance, results.n_relevant))
    if options.full_ranking_metrics and results.relevant_ranks is not None:
        out.update(calc_full_ranking_metrics(results.relevant_ranks, results.n_relevant))
    return out


def score(
    results: RetrievalResults,
    options: MetricOptions,
    postprocessed: Mapping[str, RetrievalResults] | None = None,
) -> MetricTable:
    """The metric table of a ranking (and of its post-processed rankings, prefixed).

    Example:
        >>> from embedlab.retrieval.results import retrieve
        >>> qg = QueryGallery.from_columns(torch.tensor([[0.0], [0.1], [1.0], [1.2]]),
        ...                                [0, 0, 1, 1], categories=["a", "a", "b", "b"])
        >>> table = score(retrieve(qg, 2), MetricOptions((1,), (2,), (), (0.5,)))
        >>> table.metrics["OVERALL"]  # doctest: +NORMALIZE_WHITESPACE
        {'cmc': {1: 1.0}, 'precision': {2: 1.0}, 'map': {}, 'pcf': {0.5: 1.0},
         'n_queries': 4, 'n_queries_no_relevant': 0}
        >>> table.groups
        ['OVERALL', 'a', 'b']
    """
    unreduced = per_query_metrics(results, options)
    for steps, ranking in (postprocessed or {}).items():
        if ranking.query_gallery is not results.query_gallery:
            raise EmbedlabError(f"score: post-processed results {steps!r} rank other items")
        for name, values in per_query_metrics(ranking, options).items():
            unreduced[f"{steps}/{name}"] = values
    qg = results.query_gallery
    categories = (
        None
        if qg.categories is None
        else [qg.categories[i] for i in results.query_positions.tolist()]
    )
    valid = results.valid_queries
    reduced = reduce_metrics(unreduced, categories, valid)
    grouped = group_unreduced_metrics(unreduced, categories, valid)
    pcf = pcf_by_group(qg, options.pcf_variance)
    fnmr = fnmr_at_fmr(results, options.fnmr_fmr) if options.fnmr_fmr else None
    metrics: dict[str, dict] = {}
    per_query: dict[str, dict] = {}
    for group in MetricTable.merge_groups(reduced, pcf):
        counts = reduced.get(group, {"n_queries": 0, "n_queries_no_relevant": 0})
        tail = {
            "pcf": pcf.get(group, {}),
            "n_queries": counts["n_queries"],
            "n_queries_no_relevant": counts["n_queries_no_relevant"],
        }
        metrics[group] = {**_ordered(unreduced, counts), **tail}
        if group == OVERALL and fnmr is not None:
            metrics[group]["fnmr@fmr"] = fnmr
        per_query[group] = {**_ordered(unreduced, grouped.get(group, {})), **tail}
        per_query[group]["pcf"] = dict(tail["pcf"])
    return MetricTable(metrics, per_query, torch.nonzero(valid).squeeze(1))


def _ordered(unreduced: UnreducedMetrics, values: Mapping[str, object]) -> dict[str, object]:
    """cmc, precision and map first (empty when not computed), then every other metric."""
    out: dict[str, object] = {name: values.get(name, {}) for name in RETRIEVAL_METRICS}
    out.update({n: values[n] for n in unreduced if n not in RETRIEVAL_METRICS and n in values})
    return out


def pcf_by_group(
    query_gallery: QueryGallery, pcf_variance: Sequence[float]
) -> dict[str, dict[float, float]]:
    """PCF over all items (queries and gallery alike), and over each category's items.

    >>> qg = QueryGallery.from_columns(torch.eye(4, 10), [0, 0, 1, 1])
    >>> pcf_by_group(qg, (0.5,))
    {'OVERALL': {0.5: 0.2}}
    """
    if not pcf_variance:
        return {}
    out = {OVERALL: calc_pcf(query_gallery.embeddings, pcf_variance)}
    if query_gallery.categories is None:
        return out
    codes, names = factorize(query_gallery.categories)
    order = torch.sort(codes, stable=True).indices
    sizes = torch.bincount(codes, minlength=len(names)).tolist()
    for name, rows in zip(names, torch.split(order, sizes), strict=True):
        if name:
            out[name] = calc_pcf(query_gallery.embeddings[rows], pcf_variance)
    return out


def fnmr_at_fmr(results: RetrievalResults, fmr_vals: Sequence[float]) -> dict[float, float]:
    """FNMR at each false match rate over every admissible (query, gallery) pair."""
    rates = tuple(float(f) for f in fmr_vals)
    return calc_fnmr_at_fmr_chunked(*results.pair_inputs(), rates, **results.search_options())
