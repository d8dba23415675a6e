"""The numbers of ``compare.json`` for two groups of runs: per metric, both groups' means,
their spread and per-seed values, the delta, its 95% interval, p-value and verdict.

- Two groups with two or more runs on a side: the seed-aware test of
  :mod:`embedlab.compare.twolevel` (two-level bootstrap, Student's t reference).
- One run per side: the query-only statistics of :mod:`embedlab.compare.stats` (paired
  bootstrap interval, sign-flip test), and :data:`ONE_RUN_NOTE` says what they leave out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from embedlab.compare.diff import align_queries
from embedlab.compare.groups import RunGroup, stack_runs
from embedlab.compare.stats import TEST_NAME, bootstrap_ci, sign_flip_p_values
from embedlab.compare.twolevel import difference, group_level, resample_group_means

__all__ = [
    "ONE_RUN_NOTE",
    "SEED_AWARE_TEST",
    "GroupStats",
    "group_stats",
    "split_seeds",
    "verdict",
]

SEED_AWARE_TEST = (
    "two-level bootstrap (runs within each group, rescaled, then queries, paired where the "
    "queries are the same), Student's t with the degrees of freedom of the seed and query "
    "levels combined (two-sided)"
)
ONE_RUN_NOTE = (
    "one run per side: the interval and p-value count query noise only and leave out "
    "training variance (seed, batch order, hardware); compare groups of seeds to count it"
)
BORROWED_NOTE = (
    "one run on side {side}: its training variance is taken to be the other side's "
    "(same noise assumed)"
)

WITHIN_NOISE = "within noise"


def verdict(ci95: tuple[float, float] | list[float]) -> str:
    """``better`` (interval above 0), ``worse`` (below 0) or ``within noise``.

    Example:
        >>> verdict([0.001, 0.004]), verdict([-0.004, -0.001]), verdict([-0.001, 0.002])
        ('better', 'worse', 'within noise')
    """
    lo, hi = ci95
    return "better" if lo > 0 else "worse" if hi < 0 else WITHIN_NOISE


def split_seeds(seed: int) -> tuple[int, int]:
    """Independent streams for the bootstrap and the test, both fixed by ``seed``.

    Example:
        >>> split_seeds(0) == split_seeds(0), split_seeds(0) == split_seeds(1)
        (True, False)
    """
    bootstrap, test = np.random.SeedSequence(seed).spawn(2)
    return int(bootstrap.generate_state(1)[0]), int(test.generate_state(1)[0])


@dataclass
class GroupStats:
    """What :func:`group_stats` found: the metric entries and how they were computed."""

    metrics: dict[str, dict[str, Any]]
    training_variance: bool
    test: str
    paired: bool
    n_queries: int
    notes: list[str]


def _query_only(a: RunGroup, b: RunGroup, n_resamples: int, seed: int) -> dict[str, Any]:
    """1 vs 1: the paired query bootstrap and sign-flip test, as for two runs."""
    ra, rb = a.runs[0], b.runs[0]
    aligned = align_queries(ra.per_query, rb.per_query, ra.name, rb.name)
    differences = aligned.differences()
    seed_bootstrap, seed_test = split_seeds(seed)
    return {
        "metrics": aligned.metrics,
        "delta": differences.mean(axis=0),
        "ci95": bootstrap_ci(differences, n_resamples, seed_bootstrap),
        "p_value": sign_flip_p_values(differences, n_resamples, seed_test),
        "df": np.full(len(aligned.metrics), np.inf),
        "se": np.full(len(aligned.metrics), np.nan),
        "n_queries": len(aligned.a),
    }


def group_stats(a: RunGroup, b: RunGroup, n_resamples: int = 10_000, seed: int = 0) -> GroupStats:
    """Per-metric entries of ``compare.json`` for groups ``a`` and ``b`` (delta = b - a).

    Example:
        >>> import pandas as pd
        >>> from pathlib import Path
        >>> from embedlab.compare.runs import Run, RunSource
        >>> def run(seed, hits):  # cmc@1 of 40 queries: the first 4 x ``hits`` are hits
        ...     values = (np.arange(40) < 4 * hits).astype(float)
        ...     table = pd.DataFrame({"row_id": range(40), "path": "x", "cmc@1": values})
        ...     return Run(RunSource(f"r{seed}", f"r{seed}", "folder", Path(".")), table,
        ...                {"seed": seed})
        >>> a = RunGroup("a", [run(0, 6), run(1, 6), run(2, 7)])
        >>> b = RunGroup("b", [run(3, 9), run(4, 9), run(5, 9)])
        >>> m = group_stats(a, b, 2000).metrics["cmc@1"]
        >>> round(m["delta"], 3), m["per_seed"]["a"], m["verdict"], m["df"] >= 4
        (0.267, [0.6, 0.6, 0.7], 'better', True)
    """
    stacked = stack_runs([a, b])
    seed_bootstrap, _ = split_seeds(seed)
    draws = resample_group_means(
        stacked.matrices, stacked.query_sets, stacked.groups, n_resamples, seed_bootstrap
    )
    means_a, means_b = stacked.run_means(0), stacked.run_means(1)
    level_a = group_level(draws, 0, means_a, stacked.bounds(0))
    level_b = group_level(draws, 1, means_b, stacked.bounds(1))
    notes: list[str] = []
    if len(a.runs) == 1 and len(b.runs) == 1:
        found = _query_only(a, b, n_resamples, seed)
        order = [stacked.metrics.index(m) for m in found["metrics"]]
        test, training = TEST_NAME, False
        notes.append(ONE_RUN_NOTE)
    else:
        diff = difference(draws, 0, 1, means_a, means_b)
        order = list(range(len(stacked.metrics)))
        found = {
            "metrics": stacked.metrics,
            "delta": diff.delta,
            "ci95": diff.ci95,
            "p_value": diff.p_value,
            "df": diff.df,
            "se": diff.se,
            "n_queries": min(stacked.n_queries),
        }
        test, training = SEED_AWARE_TEST, True
        for side, group in (("a", a), ("b", b)):
            if len(group.runs) == 1:
                notes.append(BORROWED_NOTE.format(side=side.upper()))
    metrics = {}
    for j, name in enumerate(found["metrics"]):
        col = order[j]
        ci = [float(found["ci95"][j, 0]), float(found["ci95"][j, 1])]
        metrics[name] = {
            "a": float(level_a.mean[col]),
            "b": float(level_b.mean[col]),
            "delta": float(found["delta"][j]),
            "ci95": ci,
            "p_value": float(found["p_value"][j]),
            "verdict": verdict(ci),
            "se": _finite(found["se"][j]),
            "df": _finite(found["df"][j]),
            "spread": {"a": float(level_a.sd[col]), "b": float(level_b.sd[col])},
            "per_seed": {
                "a": [float(v) for v in means_a[:, col]],
                "b": [float(v) for v in means_b[:, col]],
            },
            "level_ci95": {
                "a": [float(v) for v in level_a.ci95[col]],
                "b": [float(v) for v in level_b.ci95[col]],
            },
        }
    return GroupStats(metrics, training, test, stacked.paired, found["n_queries"], notes)


def _finite(value: float) -> float | None:
    """JSON has no infinity or nan: an infinite df (normal reference) or a standard error
    that was not computed (one run per side) is written as null."""
    return float(value) if np.isfinite(value) else None
