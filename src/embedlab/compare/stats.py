"""Uncertainty of metric means over queries: seeded bootstrap intervals and a paired test.

Both work on a ``[n_queries, n_metrics]`` matrix at once and draw their random numbers
in blocks, so memory stays bounded (about :data:`BLOCK_ELEMENTS` numbers at a time)
whatever the number of queries.

- :func:`bootstrap_ci`: percentile interval of the mean from ``n_resamples`` resamples
  of the queries with replacement. Given per-query *differences* ``b - a`` it is the
  paired bootstrap of the delta (both runs are resampled with the same queries).
- :func:`sign_flip_p_values`: the paired sign-flip (permutation) test of "the mean
  difference is zero": under that hypothesis each query's difference is as likely to
  have either sign. Exact (every sign pattern of the non-zero differences) when at most
  :data:`EXACT_MAX_NONZERO` differences are non-zero, else Monte Carlo with the add-one
  correction ``(1 + hits) / (1 + n_resamples)``.
"""

from __future__ import annotations

import itertools

import numpy as np

__all__ = [
    "BLOCK_ELEMENTS",
    "EXACT_MAX_NONZERO",
    "TEST_NAME",
    "bootstrap_ci",
    "bootstrap_means",
    "sign_flip_p_values",
]

BLOCK_ELEMENTS = 1 << 23
"""Random numbers drawn per block (~64 MB as int64)."""

EXACT_MAX_NONZERO = 16
"""Up to this many non-zero differences the sign-flip test enumerates all 2**n patterns."""

TEST_NAME = "paired sign-flip permutation test of the mean difference (two-sided)"

# Relative slack when comparing a resampled statistic with the observed one: sums of the
# same numbers in another order differ in the last bits.
_TIES = 1e-9


def _as_matrix(values: np.ndarray) -> np.ndarray:
    matrix = np.asarray(values, dtype=np.float64)
    if matrix.ndim == 1:
        matrix = matrix[:, None]
    if matrix.ndim != 2 or matrix.shape[0] == 0:
        raise ValueError(f"expected a non-empty [n_queries, n_metrics] array, got {matrix.shape}")
    return matrix


def bootstrap_means(values: np.ndarray, n_resamples: int = 10_000, seed: int = 0) -> np.ndarray:
    """Means of ``n_resamples`` bootstrap resamples of the rows: ``[n_resamples, n_metrics]``.

    Every resample draws ``n`` row numbers with replacement from
    ``np.random.default_rng(seed)``; all columns share the resample, so per-metric results
    are paired with each other too.

    Example:
        >>> means = bootstrap_means(np.array([0.0, 1.0]), n_resamples=1000, seed=0)
        >>> means.shape, sorted(set(means[:, 0].tolist()))
        ((1000, 1), [0.0, 0.5, 1.0])
    """
    matrix = _as_matrix(values)
    n, m = matrix.shape
    rng = np.random.default_rng(seed)
    out = np.empty((n_resamples, m))
    block = max(1, BLOCK_ELEMENTS // n)
    for start in range(0, n_resamples, block):
        stop = min(n_resamples, start + block)
        rows = rng.integers(0, n, size=(stop - start, n))
        if m == 1:
            out[start:stop, 0] = matrix[rows, 0].mean(axis=1)
        else:
            for j in range(m):  # one column at a time: [block, n] not [block, n, m]
                out[start:stop, j] = matrix[rows, j].mean(axis=1)
    return out


def bootstrap_ci(
    values: np.ndarray, n_resamples: int = 10_000, seed: int = 0, level: float = 0.95
) -> np.ndarray:
    """Percentile bootstrap interval of each column's mean: ``[n_metrics, 2]`` (lo, hi).

    Example:
        >>> bootstrap_ci(np.array([[0.5, 1.0], [0.5, 0.0]]), n_resamples=2000).round(2).tolist()
        [[0.5, 0.5], [0.0, 1.0]]
    """
    means = bootstrap_means(values, n_resamples, seed)
    tail = (1.0 - level) / 2.0
    return np.quantile(means, [tail, 1.0 - tail], axis=0).T


def _exact_p(nonzero: np.ndarray, observed: float) -> float:
    patterns = np.array(list(itertools.product((1.0, -1.0), repeat=len(nonzero))))
    flipped = np.abs(patterns @ nonzero)
    return float(np.mean(flipped >= observed - _TIES * max(1.0, observed)))


def sign_flip_p_values(
    differences: np.ndarray, n_resamples: int = 10_000, seed: int = 0
) -> np.ndarray:
    """Two-sided p-value of each column's mean difference being zero: ``[n_metrics]``.

    ``differences`` are per-query ``b - a`` (one column per metric). Queries whose
    difference is zero carry no sign and do not change the statistic ``|sum|``.

    Example:
        >>> # 3 queries improved by 1, 2 unchanged: 2 of the 8 sign patterns reach |sum| = 3
        >>> sign_flip_p_values(np.array([1.0, 1.0, 1.0, 0.0, 0.0])).tolist()
        [0.25]
        >>> sign_flip_p_values(np.zeros(4)).tolist()  # nothing changed
        [1.0]
    """
    matrix = _as_matrix(differences)
    n, m = matrix.shape
    observed = np.abs(matrix.sum(axis=0))
    p_values = np.empty(m)
    monte_carlo = []
    for j in range(m):
        nonzero = matrix[matrix[:, j] != 0, j]
        if len(nonzero) <= EXACT_MAX_NONZERO:
            p_values[j] = _exact_p(nonzero, observed[j])
        else:
            monte_carlo.append(j)
    if monte_carlo:
        columns = matrix[:, monte_carlo]
        hits = np.zeros(len(monte_carlo))
        rng = np.random.default_rng(seed)
        block = max(1, BLOCK_ELEMENTS // n)
        for start in range(0, n_resamples, block):
            size = min(block, n_resamples - start)
            signs = rng.integers(0, 2, size=(size, n), dtype=np.int8) * 2.0 - 1.0
            flipped = np.abs(signs @ columns)
            limit = observed[monte_carlo] - _TIES * np.maximum(1.0, observed[monte_carlo])
            hits += (flipped >= limit).sum(axis=0)
        p_values[monte_carlo] = (1.0 + hits) / (1.0 + n_resamples)
    return p_values
