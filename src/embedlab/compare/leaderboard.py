"""Many runs side by side: one row per run, the params that differ, metric means with intervals."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedlab.compare.diff import changed_params
from embedlab.compare.page import render_leaderboard_page
from embedlab.compare.runs import Run, metric_columns
from embedlab.compare.stats import bootstrap_ci
from embedlab.errors import EmbedlabError
from embedlab.io import atomic_write_text, write_json

__all__ = ["build_leaderboard", "format_leaderboard_table", "write_leaderboard"]

LEADERBOARD_JSON = "leaderboard.json"
PAGE = "index.html"


def build_leaderboard(
    runs: Sequence[Run], sort: str = "cmc@1", n_resamples: int = 10_000, seed: int = 0
) -> dict[str, Any]:
    """The ``leaderboard.json`` content: runs sorted by ``sort`` (highest first).

    Each run's interval is a bootstrap of its own per-query mean (runs need not share
    their queries; ``n_queries`` says how many each has).

    Example:
        >>> import pandas as pd
        >>> from embedlab.compare.runs import RunSource
        >>> def run(name, hits, lr):
        ...     table = pd.DataFrame({"row_id": range(len(hits)), "cmc@1": hits})
        ...     return Run(RunSource(name, name, "folder", Path(name)), table, {"lr": lr})
        >>> board = build_leaderboard([run("a", [1.0, 0, 0], 0.1), run("b", [1.0, 1, 0], 0.3)])
        >>> [(r["name"], round(r["metrics"]["cmc@1"]["mean"], 3), r["params"])
        ...  for r in board["runs"]]
        [('b', 0.667, {'lr': 0.3}), ('a', 0.333, {'lr': 0.1})]
    """
    if not runs:
        raise EmbedlabError("leaderboard: no runs to rank")
    metrics = list(dict.fromkeys(m for run in runs for m in metric_columns(run.per_query)))
    if sort not in metrics:
        raise EmbedlabError(
            f"--sort {sort!r} is not a metric of these runs; choose one of {metrics}"
        )
    changed = changed_params([run.params for run in runs])
    rows = []
    for number, run in enumerate(runs):
        names = metric_columns(run.per_query)
        intervals = bootstrap_ci(run.per_query[names].to_numpy(float), n_resamples, seed)
        rows.append(
            {
                "name": run.name,
                **run.source.describe(),
                "n_queries": len(run.per_query),
                "params": {key: values[number] for key, values in changed.items()},
                "metrics": {
                    name: {
                        "mean": float(run.per_query[name].mean()),
                        "ci95": [float(intervals[j, 0]), float(intervals[j, 1])],
                    }
                    for j, name in enumerate(names)
                },
            }
        )
    rows.sort(key=lambda r: -r["metrics"].get(sort, {"mean": -np.inf})["mean"])
    return {
        "sort": sort,
        "seed": seed,
        "n_resamples": n_resamples,
        "metrics": metrics,
        "params_changed": list(changed),
        "runs": rows,
    }


def write_leaderboard(
    runs: Sequence[Run],
    out_dir: Path,
    sort: str = "cmc@1",
    n_resamples: int = 10_000,
    seed: int = 0,
) -> dict[str, Any]:
    """Build the leaderboard and write ``out_dir/leaderboard.json`` and ``out_dir/index.html``."""
    board = build_leaderboard(runs, sort, n_resamples, seed)
    write_json(Path(out_dir) / LEADERBOARD_JSON, board)
    atomic_write_text(Path(out_dir) / PAGE, render_leaderboard_page(board))
    return board


def format_leaderboard_table(board: dict[str, Any], metrics: Sequence[str] | None = None) -> str:
    """The terminal leaderboard: rank, run, changed params, metric means with intervals.

    Example:
        >>> board = {"sort": "cmc@1", "metrics": ["cmc@1"], "params_changed": ["lr"],
        ...          "runs": [{"name": "b", "params": {"lr": 0.3}, "n_queries": 3,
        ...                    "metrics": {"cmc@1": {"mean": 0.667, "ci95": [0.0, 1.0]}}}]}
        >>> print(format_leaderboard_table(board))
        #  run  lr   queries  cmc@1 [95%]
        1  b    0.3        3  0.6670 [0.0000, 1.0000]
    """
    metrics = list(metrics or board["metrics"])
    keys = list(board["params_changed"])
    header = ["#", "run", *keys, "queries", *(f"{m} [95%]" for m in metrics)]
    table = [header]
    for rank, run in enumerate(board["runs"], start=1):
        cells = [str(rank), str(run["name"]), *(str(run["params"].get(k)) for k in keys)]
        cells.append(str(run["n_queries"]))
        for m in metrics:
            value = run["metrics"].get(m)
            cells.append(
                f"{value['mean']:.4f} [{value['ci95'][0]:.4f}, {value['ci95'][1]:.4f}]"
                if value
                else "-"
            )
        table.append(cells)
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    numeric = {0, len(keys) + 2}  # rank and query count align right
    lines = []
    for row in table:
        parts = [
            cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)
