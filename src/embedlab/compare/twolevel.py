"""Seed-aware uncertainty: a two-level bootstrap over training runs, then queries.

Runs whose params differ only in ``seed`` are replicates of one configuration (a *group*).
A group's score is the mean over its runs of each run's mean over queries, and it moves
with two things: which seeds were trained (training variance: seed, batch order, float
rounding) and which queries were scored. :func:`resample_group_means` resamples both:

1. **queries**, with replacement; runs that scored the same queries (one *query set*)
   share the draw, so comparisons on the same queries are paired;
2. **runs** within each group, with replacement, rescaled by ``sqrt(k / (k - 1))`` around
   the group's mean (Rao and Wu's rescaled bootstrap), so that the spread it adds is the
   unbiased ``s**2 / k`` of the run means and not ``(k - 1) / k`` of it.

A group of one run has no run level: its draws carry query noise only.

:func:`difference` turns the draws of two groups into a delta, its standard error (the
spread of the resampled deltas), a 95% interval and a two-sided p-value. With a handful
of seeds a normal reference is too narrow (the run-level variance is estimated from
``k - 1`` degrees of freedom), so both use Student's t, its degrees of freedom those of
the run level (``ka + kb - 2`` for groups of equal size, Welch's otherwise) and of the
query level combined by their shares of the variance (Satterthwaite). A side with one
run borrows the other side's run-level variance (same training noise assumed); with one
run on both sides nothing measures training variance and the caller says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

__all__ = [
    "Difference",
    "Draws",
    "LevelInterval",
    "difference",
    "group_level",
    "query_weights",
    "resample_group_means",
    "satterthwaite_df",
]

BLOCK_ELEMENTS = 1 << 22
"""Query weights drawn per block (~32 MB as float64)."""

LEVEL = 0.95


def query_weights(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """``size`` bootstrap resamples of ``n`` queries as weights: ``[size, n]``, rows sum to 1.

    Row ``r`` holds how often each query was drawn, over ``n``; ``weights @ values`` is
    then the resampled mean.

    Example:
        >>> w = query_weights(np.random.default_rng(0), n=4, size=3)
        >>> w.shape, w.sum(axis=1).tolist(), bool(((w * 4) % 1 == 0).all())
        ((3, 4), [1.0, 1.0, 1.0], True)
    """
    drawn = rng.integers(0, n, size=(size, n))
    drawn += (np.arange(size) * n)[:, None]
    counts = np.bincount(drawn.ravel(), minlength=size * n).reshape(size, n)
    return counts / float(n)


def _check(runs: Sequence[np.ndarray], query_sets: Sequence[int], groups: Sequence[int]) -> int:
    if not runs or not (len(runs) == len(query_sets) == len(groups)):
        raise ValueError("runs, query_sets and groups must be non-empty and of the same length")
    widths = {np.shape(r)[1] for r in runs}
    if len(widths) != 1:
        raise ValueError(f"runs have different numbers of metric columns: {sorted(widths)}")
    for s in set(query_sets):
        sizes = {len(runs[i]) for i in range(len(runs)) if query_sets[i] == s}
        if len(sizes) != 1:
            raise ValueError(f"query set {s}: its runs have different numbers of queries")
    if sorted(set(groups)) != list(range(max(groups) + 1)):
        raise ValueError("groups must number the groups 0..G-1, each with at least one run")
    return widths.pop()


@dataclass(frozen=True)
class Draws:
    """Bootstrap draws of every group's mean, ``[n_resamples, n_groups, n_metrics]`` each.

    ``total`` resamples both levels; ``queries`` the queries only (the mean of all of a
    group's runs under the same query draw), which sizes the query level's share.
    """

    total: np.ndarray
    queries: np.ndarray
    n_queries: int
    """The fewest queries any run scored (the query level's degrees of freedom)."""


def resample_group_means(
    runs: Sequence[np.ndarray],
    query_sets: Sequence[int],
    groups: Sequence[int],
    n_resamples: int = 10_000,
    seed: int = 0,
) -> Draws:
    """Two-level bootstrap draws of every group's mean (see :class:`Draws`).

    ``runs[i]`` is run ``i``'s ``[n_queries, n_metrics]`` per-query values; runs with
    the same ``query_sets[i]`` scored the same queries, in the same row order, and are
    resampled with the same queries (paired); ``groups[i]`` is its group (0..G-1).

    Example:
        >>> a = [np.array([[0.0], [1.0]]), np.array([[1.0], [1.0]])]  # two seeds of A
        >>> draws = resample_group_means(a + [np.array([[1.0], [0.0]])], [0, 0, 0], [0, 0, 1], 500)
        >>> draws.total.shape, draws.queries.shape, float(draws.total[:, 1].min()) >= 0.0
        ((500, 2, 1), (500, 2, 1), True)
    """
    m = _check(runs, query_sets, groups)
    matrices = [np.asarray(r, dtype=np.float64) for r in runs]
    n_groups = max(groups) + 1
    members = [[i for i, g in enumerate(groups) if g == gi] for gi in range(n_groups)]
    sets = sorted(set(query_sets))
    stacked = {  # one [n_queries, k * m] matrix per query set: one matmul per block
        s: np.concatenate([matrices[i] for i in range(len(runs)) if query_sets[i] == s], axis=1)
        for s in sets
    }
    column = {}  # run -> its columns in its set's stacked matrix
    for s in sets:
        in_set = [i for i in range(len(runs)) if query_sets[i] == s]
        for position, i in enumerate(in_set):
            column[i] = (s, slice(position * m, (position + 1) * m))
    rng = np.random.default_rng(seed)
    largest = max(len(r) for r in matrices)
    block = max(1, BLOCK_ELEMENTS // largest)
    out = np.empty((n_resamples, n_groups, m))
    queries_only = np.empty((n_resamples, n_groups, m))
    for start in range(0, n_resamples, block):
        size = min(block, n_resamples - start)
        means = {s: query_weights(rng, len(stacked[s]), size) @ stacked[s] for s in sets}
        run_means = np.stack(
            [means[column[i][0]][:, column[i][1]] for i in range(len(runs))], axis=1
        )  # [size, n_runs, m]
        for gi, index in enumerate(members):
            queries_only[start : start + size, gi] = run_means[:, index].mean(axis=1)
            out[start : start + size, gi] = _resample_runs(rng, run_means[:, index], size)
    return Draws(out, queries_only, min(len(r) for r in matrices))


def _resample_runs(rng: np.random.Generator, run_means: np.ndarray, size: int) -> np.ndarray:
    """Rescaled bootstrap of the runs of one group: ``run_means`` is ``[size, k, m]``."""
    k = run_means.shape[1]
    full = run_means.mean(axis=1)
    if k == 1:
        return full
    picked = rng.integers(0, k, size=(size, k))
    resampled = np.take_along_axis(run_means, picked[:, :, None], axis=1).mean(axis=1)
    return full + np.sqrt(k / (k - 1)) * (resampled - full)


@dataclass(frozen=True)
class Difference:
    """Seed-aware delta ``b - a`` of two groups, per metric."""

    delta: np.ndarray
    se: np.ndarray
    df: np.ndarray
    ci95: np.ndarray
    p_value: np.ndarray
    training_variance: bool
    """False when both sides have one run: then only query noise is counted."""


def _t_interval(centre: np.ndarray, se: np.ndarray, df: np.ndarray) -> np.ndarray:
    quantile = scipy_stats.t.ppf(0.5 + LEVEL / 2.0, df)
    return np.stack([centre - quantile * se, centre + quantile * se], axis=1)


def _p_values(delta: np.ndarray, se: np.ndarray, df: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.abs(delta) / se
    p = 2.0 * scipy_stats.t.sf(t, df)
    return np.where(se > 0, p, np.where(delta == 0, 1.0, 0.0))


def satterthwaite_df(total: np.ndarray, parts: Sequence[tuple[np.ndarray, float]]) -> np.ndarray:
    """Degrees of freedom of a variance ``total`` made of ``(variance, its df)`` parts.

    Example:
        >>> satterthwaite_df(np.array([2.0]), [(np.array([1.0]), 4.0), (np.array([1.0]), 4.0)])
        array([8.])
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        denominator = sum(np.asarray(v) ** 2 / df for v, df in parts)
        df = np.asarray(total) ** 2 / denominator
    # no spread anywhere: nothing to estimate, the smallest df is the safe choice
    return np.where(np.isfinite(df), df, min(d for _, d in parts))


def difference(draws: Draws, a: int, b: int, runs_a: np.ndarray, runs_b: np.ndarray) -> Difference:
    """Delta, interval and p-value of group ``b`` minus group ``a`` from their draws.

    ``runs_*`` are the groups' runs' plain means (``[k, m]``): they give the point
    estimate. The standard error is the spread of the resampled deltas; the degrees of
    freedom combine the run level (``ka + kb - 2`` for equal group sizes, where the
    statistic is Student's and robust to unequal variances; Welch's otherwise) with the
    query level (``n_queries - 1``), weighted by their shares (Satterthwaite).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> runs = [rng.normal(0.8 + 0.01 * (i >= 3), 0.002, size=(50, 1)) for i in range(6)]
        >>> draws = resample_group_means(runs, [0] * 6, [0, 0, 0, 1, 1, 1], 2000)
        >>> means = np.array([r.mean(axis=0) for r in runs])
        >>> d = difference(draws, 0, 1, means[:3], means[3:])
        >>> bool(d.ci95[0, 0] > 0), bool(d.p_value[0] < 0.05), d.training_variance
        (True, True, True)
    """
    runs_a, runs_b = np.atleast_2d(runs_a), np.atleast_2d(runs_b)
    ka, kb = len(runs_a), len(runs_b)
    delta = runs_b.mean(axis=0) - runs_a.mean(axis=0)
    query_part = (draws.queries[:, b] - draws.queries[:, a]).var(axis=0, ddof=1)
    run_a = (draws.total[:, a] - draws.queries[:, a]).var(axis=0, ddof=1)
    run_b = (draws.total[:, b] - draws.queries[:, b]).var(axis=0, ddof=1)
    query_df = float(max(draws.n_queries - 1, 1))
    if ka >= 2 and kb >= 2:
        if ka == kb:
            run_parts = [(run_a + run_b, float(ka + kb - 2))]
        else:
            run_parts = [(run_a, float(ka - 1)), (run_b, float(kb - 1))]
    elif ka >= 2 or kb >= 2:  # one side has one run: it borrows the other's training noise
        donor, k = (run_a * ka, ka) if ka >= 2 else (run_b * kb, kb)
        run_parts = [(run_a + run_b + donor, float(k - 1))]
    else:
        run_parts = []
    variance = query_part + sum(v for v, _ in run_parts)
    df = (
        satterthwaite_df(variance, [*run_parts, (query_part, query_df)])
        if run_parts
        else np.full(delta.shape, np.inf)
    )
    se = np.sqrt(variance)
    ci95 = _t_interval(delta, se, df)
    return Difference(delta, se, df, ci95, _p_values(delta, se, df), bool(run_parts))


@dataclass(frozen=True)
class LevelInterval:
    """One group's mean with a 95% interval over seeds and queries, per metric."""

    mean: np.ndarray
    sd: np.ndarray
    ci95: np.ndarray
    training_variance: bool


def group_level(
    draws: Draws,
    group: int,
    run_means: np.ndarray,
    bounds: tuple[np.ndarray, np.ndarray] | None = None,
) -> LevelInterval:
    """A group's mean, spread across seeds and 95% interval from its two-level draws.

    With two or more runs: mean ± t x the draws' spread, the degrees of freedom those of
    the run level (k - 1) and the query level combined (Satterthwaite). With one run: the
    percentile interval of the query bootstrap (training variance left out). ``bounds``
    (the smallest and largest per-query values) clip the interval: a mean cannot leave them.

    Example:
        >>> runs = [np.array([[0.7], [0.9]]), np.array([[0.8], [0.8]])]
        >>> level = group_level(resample_group_means(runs, [0, 0], [0, 0], 2000), 0,
        ...                     np.array([[0.8], [0.8]]))
        >>> level.mean.tolist(), level.sd.tolist(), level.training_variance
        ([0.8], [0.0], True)
    """
    run_means = np.atleast_2d(run_means)
    k = len(run_means)
    mean = run_means.mean(axis=0)
    total = draws.total[:, group]
    if k < 2:
        tail = (1.0 - LEVEL) / 2.0
        ci95 = np.quantile(total, [tail, 1.0 - tail], axis=0).T
        return LevelInterval(mean, np.zeros_like(mean), ci95, False)
    queries = draws.queries[:, group]
    run_part = (total - queries).var(axis=0, ddof=1)
    query_part = queries.var(axis=0, ddof=1)
    variance = run_part + query_part
    df = satterthwaite_df(
        variance, [(run_part, float(k - 1)), (query_part, float(max(draws.n_queries - 1, 1)))]
    )
    ci95 = _t_interval(mean, np.sqrt(variance), df)
    if bounds is not None:
        ci95 = np.stack([np.maximum(ci95[:, 0], bounds[0]), np.minimum(ci95[:, 1], bounds[1])], 1)
    return LevelInterval(mean, run_means.std(axis=0, ddof=1), ci95, True)
