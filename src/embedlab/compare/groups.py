"""Replicates: runs of one configuration (params equal but for ``seed``) as one group.

- :func:`split_spec`: ``exp-a1,exp-a2,exp-a3`` on the command line is a group of three runs;
- :func:`group_by_config`: ``compare --all`` puts runs whose params differ only in ``seed``
  into one group;
- :func:`stack_runs`: the groups' per-query tables as matrices for the two-level bootstrap,
  one *query set* per distinct list of queries (same ``row_id`` and path: paired);
- :func:`consistent_changes`: fixed and broken queries between groups, counted only where
  every seed agrees, and how many queries flip between seeds of one configuration.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from embedlab.compare.runs import Run, metric_columns
from embedlab.config import flatten
from embedlab.errors import EmbedlabError

__all__ = [
    "RunGroup",
    "Stacked",
    "consistent_changes",
    "group_by_config",
    "split_spec",
    "stack_runs",
]

SEED_KEY = "seed"


def split_spec(spec: str) -> list[str]:
    """The run specs of a group written with commas (a folder's own name is kept whole).

    Example:
        >>> split_spec("exp-a1, exp-a2,exp-a3"), split_spec("HEAD")
        (['exp-a1', 'exp-a2', 'exp-a3'], ['HEAD'])
    """
    if "," not in spec or Path(spec).is_dir():
        return [spec]
    members = [part.strip() for part in spec.split(",")]
    if not all(members):
        raise EmbedlabError(f"run group '{spec}': an empty name between commas")
    if len(set(members)) < len(members):
        raise EmbedlabError(f"run group '{spec}': a run is named twice")
    return members


@dataclass
class RunGroup:
    """Replicates of one configuration: one or more runs, shown under ``name``."""

    name: str
    runs: list[Run]

    @property
    def members(self) -> list[str]:
        return [run.name for run in self.runs]

    @property
    def seeds(self) -> list[Any]:
        """Each run's top-level ``seed`` param (None where its params lack it)."""
        return [run.params.get(SEED_KEY) for run in self.runs]

    @property
    def params(self) -> dict[str, Any]:
        """The configuration: the first run's params without ``seed``."""
        return _config(self.runs[0].params)


def _config(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if k != SEED_KEY}


def group_name(members: Sequence[str]) -> str:
    """How a group is shown: its members with commas.

    Example:
        >>> group_name(["a1", "a2"]), group_name(["a1"])
        ('a1,a2', 'a1')
    """
    return ",".join(members)


def group_by_config(runs: Sequence[Run]) -> tuple[list[RunGroup], list[str]]:
    """Runs whose params differ only in ``seed``, grouped (first-seen order), and notes.

    A run with the same params *and* seed as one already in its group is a rerun, not a
    new seed: it is left out, and the second list says so.

    Example:
        >>> from embedlab.compare.runs import RunSource
        >>> def run(name, **params):
        ...     return Run(RunSource(name, name, "folder", Path(name)), pd.DataFrame(), params)
        >>> groups, notes = group_by_config([run("a", seed=0, lr=1), run("b", seed=1, lr=1),
        ...                                  run("c", seed=0, lr=2), run("d", seed=0, lr=1)])
        >>> [g.members for g in groups], notes
        ([['a', 'b'], ['c']], ["'d' has the same params and seed as 'a': left out"])
    """
    keyed: dict[str, list[Run]] = {}
    notes = []
    for run in runs:
        key = json.dumps(flatten(_config(run.params)), sort_keys=True, default=str)
        members = keyed.setdefault(key, [])
        twin = next(
            (r for r in members if r.params.get(SEED_KEY) == run.params.get(SEED_KEY)), None
        )
        if twin is not None:
            notes.append(f"'{run.name}' has the same params and seed as '{twin.name}': left out")
            continue
        members.append(run)
    groups = [
        RunGroup(group_name([r.name for r in members]), members) for members in keyed.values()
    ]
    return groups, notes


@dataclass
class Stacked:
    """The groups' runs as matrices for :func:`~embedlab.compare.twolevel.resample_group_means`."""

    metrics: list[str]
    matrices: list[np.ndarray]
    query_sets: list[int]
    groups: list[int]
    n_queries: list[int]

    def run_means(self, group: int) -> np.ndarray:
        """``[k, n_metrics]``: the plain mean of each run of ``group``."""
        return np.array(
            [m.mean(axis=0) for m, g in zip(self.matrices, self.groups, strict=True) if g == group]
        )

    def bounds(self, group: int) -> tuple[np.ndarray, np.ndarray]:
        """The smallest and largest per-query value of each metric over ``group``'s runs."""
        values = [m for m, g in zip(self.matrices, self.groups, strict=True) if g == group]
        return np.min([v.min(axis=0) for v in values], axis=0), np.max(
            [v.max(axis=0) for v in values], axis=0
        )

    @property
    def paired(self) -> bool:
        """Whether every run scored the same queries."""
        return len(set(self.query_sets)) == 1


def common_metrics(runs: Sequence[Run]) -> list[str]:
    """Metric columns every run has, in the first run's order."""
    first = metric_columns(runs[0].per_query)
    return [m for m in first if all(m in run.per_query for run in runs[1:])]


def stack_runs(groups: Sequence[RunGroup], metrics: Sequence[str] | None = None) -> Stacked:
    """Every run's per-query metrics sorted by ``row_id``, with its query set and group.

    Example:
        >>> from embedlab.compare.runs import RunSource
        >>> def run(name, ids, hits):
        ...     table = pd.DataFrame({"row_id": ids, "path": [f"{i}.png" for i in ids],
        ...                           "cmc@1": hits})
        ...     return Run(RunSource(name, name, "folder", Path(name)), table)
        >>> a = RunGroup("a", [run("a1", [2, 1], [1.0, 0.0]), run("a2", [1, 2], [1.0, 1.0])])
        >>> b = RunGroup("b", [run("b1", [7, 8], [0.0, 1.0])])
        >>> stacked = stack_runs([a, b])
        >>> stacked.query_sets, stacked.groups, stacked.matrices[0][:, 0].tolist()
        ([0, 0, 1], [0, 0, 1], [0.0, 1.0])
    """
    runs = [run for group in groups for run in group.runs]
    metrics = list(metrics) if metrics is not None else common_metrics(runs)
    if not metrics:
        names = ", ".join(f"'{run.name}'" for run in runs)
        raise EmbedlabError(f"runs {names} share no metric column")
    keys: dict[tuple, int] = {}
    matrices, sets, numbers, sizes = [], [], [], []
    for number, group in enumerate(groups):
        for run in group.runs:
            table = run.per_query.sort_values("row_id", kind="stable")
            key = (tuple(table["row_id"].tolist()), tuple(_paths(table)))
            sets.append(keys.setdefault(key, len(keys)))
            matrices.append(table[metrics].to_numpy(np.float64))
            numbers.append(number)
            sizes.append(len(table))
    return Stacked(metrics, matrices, sets, numbers, sizes)


def _paths(table: pd.DataFrame) -> list[str]:
    """The ``path`` column as text (empty when a table has none)."""
    return table["path"].astype(str).tolist() if "path" in table else [""] * len(table)


def _hit_rates(group: RunGroup, by: str, keys: pd.Index) -> tuple[np.ndarray, list[pd.DataFrame]]:
    tables = [
        run.per_query.assign(path=_paths(run.per_query)).set_index(["row_id", "path"]).loc[keys]
        for run in group.runs
    ]
    hits = np.mean([(t[by].to_numpy(float) > 0) for t in tables], axis=0)
    return hits, tables


def consistent_changes(
    a: RunGroup, b: RunGroup, by: str = "cmc@1", order_by: str = "map@5"
) -> dict[str, Any]:
    """Queries every seed of ``a`` missed and every seed of ``b`` hit (fixed), the reverse
    (broken), and the queries whose hit flips between seeds of one configuration.

    Only queries every run scored count (matched on ``row_id`` and path). Fixed queries
    come by the largest gain of the group mean of ``order_by``, broken ones by the largest
    drop (ties: row id). With one run per side this is the plain fixed/broken of two runs.

    Example:
        >>> from embedlab.compare.runs import RunSource
        >>> def run(name, hits):
        ...     table = pd.DataFrame({"row_id": range(4), "path": list("wxyz"), "cmc@1": hits})
        ...     return Run(RunSource(name, name, "folder", Path(name)), table)
        >>> a = RunGroup("a", [run("a1", [1.0, 1, 0, 0]), run("a2", [1.0, 0, 0, 0])])
        >>> b = RunGroup("b", [run("b1", [0.0, 1, 1, 0]), run("b2", [0.0, 1, 1, 0])])
        >>> consistent_changes(a, b, order_by="cmc@1")
        {'fixed': [2], 'broken': [0], 'flipping': {'a': 1, 'b': 0}, 'n_queries': 4}
    """
    keys = None
    for run in [*a.runs, *b.runs]:
        index = pd.MultiIndex.from_arrays(
            [run.per_query["row_id"], run.per_query["path"].astype(str)]
        )
        keys = index if keys is None else keys.intersection(index, sort=False)
    if keys is None or len(keys) == 0:
        return {"fixed": [], "broken": [], "flipping": {"a": 0, "b": 0}, "n_queries": 0}
    hits_a, tables_a = _hit_rates(a, by, keys)
    hits_b, tables_b = _hit_rates(b, by, keys)
    if not all(order_by in t for t in [*tables_a, *tables_b]):
        order_by = by
    change = np.mean([t[order_by].to_numpy(float) for t in tables_b], axis=0) - np.mean(
        [t[order_by].to_numpy(float) for t in tables_a], axis=0
    )
    ids = keys.get_level_values(0).to_numpy()

    def ordered(mask: np.ndarray, key: np.ndarray) -> list[int]:
        picked = np.nonzero(mask)[0]
        order = np.lexsort((ids[picked], key[picked]))  # last key sorts first
        return [int(i) for i in ids[picked][order]]

    return {
        "fixed": ordered((hits_a == 0) & (hits_b == 1), -change),
        "broken": ordered((hits_a == 1) & (hits_b == 0), change),
        "flipping": {
            "a": int(((hits_a > 0) & (hits_a < 1)).sum()),
            "b": int(((hits_b > 0) & (hits_b < 1)).sum()),
        },
        "n_queries": len(keys),
    }
