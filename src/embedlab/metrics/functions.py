"""Pure retrieval and topology metric functions (OML's definitions).

Conventions shared by every function here:

- ``is_relevant[i, j]`` says whether the j-th retrieved gallery item (nearest first) of
  query i is relevant to it; padding columns (fewer admissible items than k) are False.
- ``n_relevant[i]`` is the number of relevant *admissible* gallery items of query i
  (the query itself and items of the query's sequence are not admissible).
- A ``k`` larger than the retrieved width uses what exists, as OML clamps k to the
  gallery size; precision's denominator stays ``min(k, n_relevant)``.
- Per-query values are always finite; queries with ``n_relevant == 0`` get 0 and are
  left out of every average by `reduce_metrics` (and counted).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from embedlab.errors import EmbedlabError
from embedlab.metrics.names import OVERALL
from embedlab.retrieval.query_gallery import factorize

__all__ = [
    "OVERALL",
    "UnreducedMetrics",
    "calc_cmc",
    "calc_full_ranking_metrics",
    "calc_map",
    "calc_ndcg",
    "calc_pcf",
    "calc_precision",
    "calc_r_metrics",
    "calc_retrieval_metrics",
    "group_unreduced_metrics",
    "reduce_metrics",
]

RETRIEVAL_METRICS = ("cmc", "precision", "map")

R_METRICS = ("map@R", "r_precision")

FULL_RANKING_METRICS = ("map@all", "mrr")

#: ``{"cmc": {k: Tensor[Q]}, ..., "map@R": Tensor[Q]}``: per-k metrics, or one value per
#: query for the scalar ones (``map@R``, ``r_precision``, ``map@all``, ``mrr``).
UnreducedMetrics = dict[str, "dict[int, Tensor] | Tensor"]


def check_top_k(top_k: Sequence[int], name: str) -> None:
    """One-line error unless every cut-off is a positive integer.

    >>> check_top_k((1, 5), "cmc_top_k")
    """
    if not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in top_k):
        raise EmbedlabError(f"{name} must hold positive integers, got {tuple(top_k)}")


def _hits(is_relevant: Tensor) -> Tensor:
    """``hits[i, j]`` = number of relevant items among the first ``j + 1`` (float32)."""
    return torch.cumsum(is_relevant.to(torch.float32), dim=1)


def _column(values: Tensor, k: int) -> Tensor:
    """Column ``min(k, width) - 1`` of ``values``; zeros when the width is 0."""
    width = values.shape[1]
    if width == 0:
        return torch.zeros(values.shape[0], dtype=torch.float32)
    return values[:, min(k, width) - 1]


def calc_cmc(is_relevant: Tensor, top_k: Sequence[int]) -> dict[int, Tensor]:
    """Cumulative matching characteristic per query.

    .. math:: \\mathrm{cmc}@k = [\\,\\exists\\, i \\le k: \\mathrm{rel}_i\\,]

    Example:
        >>> rel = torch.tensor([[True, False], [False, True], [False, False]])
        >>> calc_cmc(rel, top_k=(1, 2, 10))
        {1: tensor([1., 0., 0.]), 2: tensor([1., 1., 0.]), 10: tensor([1., 1., 0.])}
    """
    check_top_k(top_k, "cmc_top_k")
    hits = _hits(is_relevant)
    return {k: (_column(hits, k) > 0).to(torch.float32) for k in top_k}


def calc_precision(
    is_relevant: Tensor, n_relevant: Tensor, top_k: Sequence[int]
) -> dict[int, Tensor]:
    """OML's precision per query: hits in the top k over ``min(k, n_relevant)``.

    .. math:: \\mathrm{precision}@k = \\frac{1}{\\min(k, n)}\\sum_{i=1}^{k} \\mathrm{rel}_i

    A perfect model scores 1 even when ``n < k``. ``n = 0`` gives 0.

    Example:
        >>> rel = torch.tensor([[True, False, True], [False, True, False]])
        >>> calc_precision(rel, torch.tensor([2, 5]), top_k=(1, 3))
        {1: tensor([1., 0.]), 3: tensor([1.0000, 0.3333])}
    """
    check_top_k(top_k, "precision_top_k")
    hits = _hits(is_relevant)
    out = {}
    for k in top_k:
        denominator = n_relevant.clamp(max=k, min=1).to(torch.float32)
        out[k] = _column(hits, k) / denominator
    return out


def calc_map(is_relevant: Tensor, top_k: Sequence[int]) -> dict[int, Tensor]:
    """OML's average precision per query: mean of precision@i over the hits i in the top k.

    .. math::
        \\mathrm{map}@k = \\frac{1}{n_k}\\sum_{i=1}^{k} \\mathrm{rel}_i\\,\\frac{n_i}{i},
        \\qquad n_i = \\sum_{j \\le i} \\mathrm{rel}_j

    and 0 when there is no hit in the top k (``n_k = 0``). This is OML's ``calc_map``
    since 0.4.0 (older releases divided by ``min(k, n_relevant)`` instead).

    Example:
        >>> rel = torch.tensor([[False, True, False, True], [False, False, False, False]])
        >>> calc_map(rel, top_k=(1, 2, 4))  # (1/2 + 2/4) / 2 = 0.5
        {1: tensor([0., 0.]), 2: tensor([0.5000, 0.0000]), 4: tensor([0.5000, 0.0000])}
    """
    check_top_k(top_k, "map_top_k")
    relevant = is_relevant.to(torch.float32)
    hits = torch.cumsum(relevant, dim=1)
    positions = torch.arange(1, relevant.shape[1] + 1, dtype=torch.float32)
    precision_sum = torch.cumsum(relevant * hits / positions, dim=1)
    return {k: _column(precision_sum, k) / _column(hits, k).clamp(min=1) for k in top_k}


def calc_ndcg(is_relevant: Tensor, n_relevant: Tensor, top_k: Sequence[int]) -> dict[int, Tensor]:
    """Normalised discounted cumulative gain per query, binary relevance, log2 discount.

    .. math::
        \\mathrm{ndcg}@k = \\frac{\\sum_{i=1}^{k} \\mathrm{rel}_i / \\log_2(i + 1)}
                               {\\sum_{i=1}^{\\min(k, n)} 1 / \\log_2(i + 1)}

    The ideal ranking puts the ``n`` relevant items first, so a perfect model scores 1
    even when ``n < k`` (as ``precision@k`` does); ``n = 0`` gives 0. Equal to
    scikit-learn's ``ndcg_score(..., k=k, ignore_ties=True)`` on the same ranking.

    Example:
        >>> rel = torch.tensor([[False, True, True], [True, False, False]])
        >>> calc_ndcg(rel, torch.tensor([2, 1]), top_k=(1, 3))  # (1/log2 3 + 1/2) / (1 + 1/log2 3)
        {1: tensor([0., 1.]), 3: tensor([0.6934, 1.0000])}
    """
    check_top_k(top_k, "ndcg_top_k")
    width = is_relevant.shape[1]
    longest = max([*top_k, width, 1])
    discount = 1.0 / torch.log2(torch.arange(2, longest + 2, dtype=torch.float64))
    gain = torch.cumsum(is_relevant.to(torch.float64) * discount[:width], dim=1)
    ideal = torch.cumsum(discount, dim=0)
    out = {}
    for k in top_k:
        best = n_relevant.clamp(max=k).to(torch.int64)
        ideal_gain = torch.where(best > 0, ideal[(best - 1).clamp(min=0)], 1.0)
        out[k] = (_column(gain, k) / ideal_gain).to(torch.float32)
    return out


def calc_full_ranking_metrics(relevant_ranks: Tensor, n_relevant: Tensor) -> dict[str, Tensor]:
    """Average precision over the full ranking (``map@all``) and reciprocal rank (``mrr``).

    With :math:`r_1 < \\dots < r_n` the ranks of the query's ``n`` relevant items in the
    full ranking of the gallery:

    .. math::
        \\mathrm{map@all} = \\frac{1}{n}\\sum_{j=1}^{n} \\frac{j}{r_j}, \\qquad
        \\mathrm{mrr} = \\frac{1}{r_1}

    ``relevant_ranks`` is ``[Q, R_max]``, 1-based ranks ascending per row, zero-padded
    (:attr:`~embedlab.retrieval.results.RetrievalResults.relevant_ranks`); a rank
    missing for an item counts 0. ``n = 0`` gives 0. Computed in float64.

    Example:
        >>> ranks = torch.tensor([[1, 3, 6], [2, 0, 0], [0, 0, 0]])
        >>> m = calc_full_ranking_metrics(ranks, torch.tensor([3, 1, 0]))
        >>> m["map@all"].tolist(), m["mrr"].tolist()  # (1 + 2/3 + 3/6) / 3
        ([0.7222222222222222, 0.5, 0.0], [1.0, 0.5, 0.0])
    """
    if relevant_ranks.ndim != 2 or relevant_ranks.shape[0] != n_relevant.shape[0]:
        raise EmbedlabError(
            f"calc_full_ranking_metrics: expected relevant_ranks [Q, R] and n_relevant [Q], "
            f"got {tuple(relevant_ranks.shape)} and {tuple(n_relevant.shape)}"
        )
    ranks = relevant_ranks.to(torch.float64)
    ranked = ranks > 0
    order = torch.cumsum(ranked.to(torch.float64), dim=1)
    precision = torch.where(ranked, order / ranks.clamp(min=1), 0.0)
    first = ranks[:, 0] if ranks.shape[1] else torch.zeros(ranks.shape[0], dtype=torch.float64)
    return {
        "map@all": precision.sum(dim=1) / n_relevant.to(torch.float64).clamp(min=1),
        "mrr": torch.where(first > 0, 1.0 / first.clamp(min=1), 0.0),
    }


def calc_r_metrics(is_relevant: Tensor, n_relevant: Tensor) -> dict[str, Tensor]:
    """MAP@R and R-precision per query (Musgrave et al. 2020), R = ``n_relevant``.

    .. math::
        \\mathrm{R\\text{-}precision} = \\frac{1}{R}\\sum_{i=1}^{R} \\mathrm{rel}_i, \\qquad
        \\mathrm{MAP@R} = \\frac{1}{R}\\sum_{i=1}^{R} \\mathrm{rel}_i\\,\\frac{n_i}{i}

    (the same as pytorch-metric-learning's ``r_precision`` and
    ``mean_average_precision_at_r``). ``is_relevant`` must be at least ``max(R)`` wide;
    ``R = 0`` gives 0. Computed in float64, as PML does.

    Example:
        >>> rel = torch.tensor([[True, False, True, False], [False, True, False, False]])
        >>> m = calc_r_metrics(rel, torch.tensor([3, 1]))
        >>> m["r_precision"].tolist(), m["map@R"].tolist()  # (1 + 2/3) / 3, and 0
        ([0.6666666666666666, 0.0], [0.5555555555555555, 0.0])
    """
    width = is_relevant.shape[1]
    if n_relevant.numel() and int(n_relevant.max()) > width:
        raise EmbedlabError(
            f"calc_r_metrics: is_relevant has {width} columns, fewer than the largest "
            f"R ({int(n_relevant.max())})"
        )
    positions = torch.arange(1, width + 1, dtype=torch.float64)
    within_r = positions.unsqueeze(0) <= n_relevant.to(torch.float64).unsqueeze(1)
    relevant = (is_relevant & within_r).to(torch.float64)
    hits = torch.cumsum(relevant, dim=1)
    r = n_relevant.to(torch.float64).clamp(min=1)
    return {
        "map@R": (relevant * hits / positions).sum(dim=1) / r,
        "r_precision": relevant.sum(dim=1) / r,
    }


def calc_retrieval_metrics(
    is_relevant: Tensor,
    n_relevant: Tensor,
    cmc_top_k: Sequence[int] = (1, 5),
    precision_top_k: Sequence[int] = (5,),
    map_top_k: Sequence[int] = (5,),
    ndcg_top_k: Sequence[int] = (),
) -> UnreducedMetrics:
    """Per-query ``cmc@k``, ``precision@k``, ``map@k`` and ``ndcg@k``.

    See `calc_cmc`, `calc_precision`, `calc_map` and `calc_ndcg` for the formulas.

    Args:
        is_relevant: ``[Q, K]`` bool, relevance of each query's K nearest gallery items.
        n_relevant: ``[Q]`` number of relevant admissible gallery items per query.
        cmc_top_k, precision_top_k, map_top_k: cut-offs (empty tuple = skip the metric).
        ndcg_top_k: cut-offs of ``ndcg`` (empty tuple, the default: no ``ndcg`` key).

    Returns:
        ``{"cmc": {k: Tensor[Q]}, "precision": {...}, "map": {...}}``, and
        ``"ndcg"`` when ``ndcg_top_k`` is not empty.

    Example:
        >>> rel = torch.tensor([[False, True, True], [True, False, False]])
        >>> m = calc_retrieval_metrics(rel, torch.tensor([2, 3]), (1, 2), (2,), (3,))
        >>> m["cmc"]
        {1: tensor([0., 1.]), 2: tensor([1., 1.])}
        >>> m["precision"], m["map"]
        ({2: tensor([0.5000, 0.5000])}, {3: tensor([0.5833, 1.0000])})
    """
    if is_relevant.ndim != 2 or n_relevant.shape != (is_relevant.shape[0],):
        raise EmbedlabError(
            f"calc_retrieval_metrics: expected is_relevant [Q, K] and n_relevant [Q], got "
            f"{tuple(is_relevant.shape)} and {tuple(n_relevant.shape)}"
        )
    out: UnreducedMetrics = {
        "cmc": calc_cmc(is_relevant, cmc_top_k),
        "precision": calc_precision(is_relevant, n_relevant, precision_top_k),
        "map": calc_map(is_relevant, map_top_k),
    }
    if ndcg_top_k:
        out["ndcg"] = calc_ndcg(is_relevant, n_relevant, ndcg_top_k)
    return out


def reject_nonfinite(embeddings: Tensor, where: str) -> None:
    """One-line error when embeddings hold NaN or inf (a diverged model), naming ``where``.

    >>> reject_nonfinite(torch.tensor([[0.0, float("nan")]]), "calc_pcf")
    Traceback (most recent call last):
    ...
    embedlab.errors.EmbedlabError: calc_pcf: 1 of 1 embeddings hold NaN or inf ...
    """
    finite = torch.isfinite(embeddings).all(dim=-1) if embeddings.ndim > 1 else None
    if finite is not None and not bool(finite.all()):
        bad = int((~finite).sum())
        raise EmbedlabError(
            f"{where}: {bad} of {len(finite)} embeddings hold NaN or inf (the model "
            "diverged; lower train.optimizer.lr)"
        )


def calc_pcf(embeddings: Tensor, pcf_variance: Sequence[float]) -> dict[float, float]:
    """Principal components fraction (OML's ``calc_pcf``).

    With :math:`\\lambda_1 \\ge \\dots \\ge \\lambda_m` the eigenvalues of the covariance
    of the ``[N, d]`` embeddings (:math:`m = \\min(N, d)`), the number of components
    for share ``r`` is
    :math:`n = 1 + \\#\\{j : \\sum_{i \\le j}\\lambda_i / \\sum_i \\lambda_i \\le r\\}`
    and ``pcf@r = n / d`` (so ``r = 1`` can give ``(rank + 1) / d``, as in OML).
    The covariance is accumulated in float64 chunk by chunk (no ``N x d`` copy, no SVD
    of the data). Embeddings with no variance (fewer than 2 rows, or all equal) have no
    principal axes: the result is then an empty dict, never NaN.

    Example:
        >>> calc_pcf(torch.eye(4, 10), pcf_variance=(0.5, 1.0))
        {0.5: 0.2, 1.0: 0.5}
        >>> calc_pcf(torch.ones(3, 4), pcf_variance=(0.5,))
        {}
    """
    if not all(0.0 <= r <= 1.0 for r in pcf_variance):
        raise EmbedlabError(f"pcf_variance must hold numbers in [0, 1], got {tuple(pcf_variance)}")
    reject_nonfinite(embeddings, "calc_pcf")
    if embeddings.ndim != 2:
        raise EmbedlabError(f"calc_pcf: expected [N, d] embeddings, got {tuple(embeddings.shape)}")
    n_items, dim = embeddings.shape
    if n_items < 2 or not pcf_variance:
        return {}
    eigenvalues = _covariance_eigenvalues(embeddings)[: min(n_items, dim)]
    if float(eigenvalues[0]) <= 0.0:
        return {}
    # Eigenvalues below the rank tolerance are round-off of true zeros.
    eigenvalues[eigenvalues < eigenvalues[0] * dim * torch.finfo(torch.float64).eps] = 0.0
    cumulative = torch.cumsum(eigenvalues, dim=0)
    ratio = cumulative / cumulative[-1]
    thresholds = torch.tensor([float(r) for r in pcf_variance], dtype=torch.float64)
    n_components = torch.searchsorted(ratio, thresholds, right=True) + 1
    return {
        float(r): float(n) / dim for r, n in zip(pcf_variance, n_components.tolist(), strict=True)
    }


def _covariance_eigenvalues(embeddings: Tensor, chunk_rows: int = 16384) -> Tensor:
    """Eigenvalues (descending, >= 0) of the scatter matrix, accumulated in float64."""
    x = embeddings.detach()
    n_items, dim = x.shape
    mean = torch.zeros(dim, dtype=torch.float64)
    for chunk in torch.split(x, chunk_rows):
        mean += chunk.to(torch.float64).sum(dim=0)
    mean /= n_items
    scatter = torch.zeros(dim, dim, dtype=torch.float64)
    for chunk in torch.split(x, chunk_rows):
        centred = chunk.to(torch.float64) - mean
        scatter.addmm_(centred.T, centred)
    return _eigvalsh_one_thread(scatter).flip(0).clamp(min=0)


def _eigvalsh_one_thread(matrix: Tensor) -> Tensor:
    """``torch.linalg.eigvalsh`` on one thread.

    A d x d eigen-solve (d = embedding size) is small, and MKL's threaded solver spins
    badly when other processes share the cores: on a 2-core machine at load 4, d = 384
    took 0.1-3.9 s on 2 threads against a steady 0.02 s on one.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return torch.linalg.eigvalsh(matrix)
    finally:
        torch.set_num_threads(threads)


def _category_groups(
    categories: Sequence[object] | Tensor | None, n_queries: int
) -> tuple[Tensor, list[str]]:
    """Codes and names of the reported categories; the empty name ("" = absent) is dropped."""
    if categories is None:
        return torch.full((n_queries,), -1, dtype=torch.int64), []
    codes, names = factorize(categories)
    if len(codes) != n_queries:
        raise EmbedlabError(
            f"categories: expected {n_queries} values (one per query), got {len(codes)}"
        )
    if "" in names:
        empty = names.index("")
        codes = torch.where(codes == empty, -1, codes - (codes > empty).to(torch.int64))
        names = [n for n in names if n != ""]
    return codes, names


def reduce_metrics(
    unreduced: UnreducedMetrics,
    categories: Sequence[object] | Tensor | None,
    valid_mask: Tensor,
) -> dict[str, dict]:
    """Average per-query metrics over the valid queries, overall and per category.

    One ``bincount`` per metric (a group-by linear in Q). Each group reports
    ``n_queries`` (valid queries averaged) and ``n_queries_no_relevant`` (queries left
    out because nothing relevant exists for them). A category whose queries are all
    invalid keeps its counts and gets empty metric dicts, so no NaN is ever returned.
    Queries with an empty category name count in ``OVERALL`` only.

    Args:
        unreduced: ``{"cmc": {k: Tensor[Q]}, ...}`` over all Q queries.
        categories: one category per query, or None.
        valid_mask: ``[Q]`` bool, True where ``n_relevant > 0``.

    Example:
        >>> m = {"cmc": {1: torch.tensor([1.0, 0.0, 1.0, 0.0])}}
        >>> valid = torch.tensor([True, True, True, False])
        >>> reduce_metrics(m, ["a", "a", "b", "c"], valid)  # doctest: +NORMALIZE_WHITESPACE
        {'OVERALL': {'cmc': {1: 0.6666666666666666}, 'n_queries': 3, 'n_queries_no_relevant': 1},
         'a': {'cmc': {1: 0.5}, 'n_queries': 2, 'n_queries_no_relevant': 0},
         'b': {'cmc': {1: 1.0}, 'n_queries': 1, 'n_queries_no_relevant': 0},
         'c': {'cmc': {}, 'n_queries': 0, 'n_queries_no_relevant': 1}}
    """
    n_queries = valid_mask.shape[0]
    valid_mask = valid_mask.to(torch.bool)
    codes, names = _category_groups(categories, n_queries)
    # Group 0 is OVERALL; category c goes to group c + 1, absent ("") to a dropped group.
    groups = torch.where(codes >= 0, codes + 1, len(names) + 1)
    n_groups = len(names) + 2
    valid_groups = groups[valid_mask]
    n_valid = torch.bincount(valid_groups, minlength=n_groups)
    n_valid[0] = int(valid_mask.sum())
    n_invalid = torch.bincount(groups[~valid_mask], minlength=n_groups)
    n_invalid[0] = int((~valid_mask).sum())

    means: dict[str, dict] = {}
    scalars = {name for name, per_k in unreduced.items() if isinstance(per_k, Tensor)}
    for name, per_k in unreduced.items():
        means[name] = {}
        for k, values in per_k.items() if isinstance(per_k, dict) else [(None, per_k)]:
            valid_values = values[valid_mask].to(torch.float64)
            sums = torch.bincount(valid_groups, weights=valid_values, minlength=n_groups)
            sums[0] = valid_values.sum()
            means[name][k] = sums / n_valid.clamp(min=1)

    out: dict[str, dict] = {}
    for group, label in enumerate([OVERALL, *names]):
        has_valid = int(n_valid[group]) > 0
        report: dict = {
            name: ({k: float(v[group]) for k, v in per_k.items()} if has_valid else {})
            for name, per_k in means.items()
            if name not in scalars
        }
        if has_valid:  # a scalar metric of a group without valid queries is left out
            report.update({name: float(means[name][None][group]) for name in scalars})
        report["n_queries"] = int(n_valid[group])
        report["n_queries_no_relevant"] = int(n_invalid[group])
        out[label] = report
    return out


def group_unreduced_metrics(
    unreduced: UnreducedMetrics,
    categories: Sequence[object] | Tensor | None,
    valid_mask: Tensor,
) -> dict[str, UnreducedMetrics]:
    """Per-query values of the valid queries, overall and per category.

    One stable sort by category then a split (no loop over queries per category); inside
    each group, queries keep their original order.

    Example:
        >>> m = {"map": {5: torch.tensor([0.1, 0.2, 0.3, 0.4])}}
        >>> valid = torch.tensor([True, True, True, False])
        >>> g = group_unreduced_metrics(m, ["b", "a", "b", "a"], valid)
        >>> g["OVERALL"]["map"][5], g["a"]["map"][5], g["b"]["map"][5]
        (tensor([0.1000, 0.2000, 0.3000]), tensor([0.2000]), tensor([0.1000, 0.3000]))
    """
    valid_mask = valid_mask.to(torch.bool)
    codes, names = _category_groups(categories, valid_mask.shape[0])
    valid_codes = codes[valid_mask]
    order = torch.sort(valid_codes, stable=True).indices
    sizes = torch.bincount(valid_codes + 1, minlength=len(names) + 1).tolist()
    out: dict[str, UnreducedMetrics] = {OVERALL: {}}
    out.update({name: {} for name in names})
    for metric, per_k in unreduced.items():
        if isinstance(per_k, Tensor):  # a scalar metric: one value per query, no k
            valid_values = per_k[valid_mask]
            out[OVERALL][metric] = valid_values
            pieces = torch.split(valid_values[order], sizes)
            for name, piece in zip(names, pieces[1:], strict=True):
                out[name][metric] = piece
            continue
        for label in out:
            out[label][metric] = {}
        for k, values in per_k.items():
            valid_values = values[valid_mask]
            out[OVERALL][metric][k] = valid_values
            # sizes[0] are the queries without a category; they come first after sorting.
            pieces = torch.split(valid_values[order], sizes)
            for name, piece in zip(names, pieces[1:], strict=True):
                out[name][metric][k] = piece
    return out
