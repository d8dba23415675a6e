"""Many configurations side by side: one row per group of seeds, the params that differ,
each metric's mean with a 95% interval over seeds and queries, and which configurations
cannot be told apart from the best."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedlab.compare.diff import changed_params
from embedlab.compare.groups import RunGroup, stack_runs
from embedlab.compare.groupstats import ONE_RUN_NOTE, verdict
from embedlab.compare.page import render_leaderboard_page
from embedlab.compare.runs import Run, metric_columns
from embedlab.compare.twolevel import Draws, difference, group_level, resample_group_means
from embedlab.errors import EmbedlabError
from embedlab.io import atomic_write_text, write_json

__all__ = ["build_leaderboard", "format_leaderboard_table", "write_leaderboard"]

LEADERBOARD_JSON = "leaderboard.json"
PAGE = "index.html"


def _as_groups(entries: Sequence[Run | RunGroup]) -> list[RunGroup]:
    return [e if isinstance(e, RunGroup) else RunGroup(e.name, [e]) for e in entries]


def _metrics_of(groups: Sequence[RunGroup]) -> list[str]:
    return list(
        dict.fromkeys(m for g in groups for run in g.runs for m in metric_columns(run.per_query))
    )


def _group_metrics(groups: Sequence[RunGroup], metric: str, n_resamples: int, seed: int):
    """Every group's level (mean, sd, interval) of ``metric`` from one two-level draw."""
    having = [g for g in groups if all(metric in run.per_query for run in g.runs)]
    stacked = stack_runs(having, [metric])
    draws = resample_group_means(
        stacked.matrices, stacked.query_sets, stacked.groups, n_resamples, seed
    )
    means = [stacked.run_means(i) for i in range(len(having))]
    levels = {
        g.name: (group_level(draws, i, means[i], stacked.bounds(i)), means[i])
        for i, g in enumerate(having)
    }
    return levels, draws, means, having


def _versus_best(draws: Draws, means: list[np.ndarray], best: int, i: int) -> dict[str, Any]:
    """Delta of group ``i`` minus the best, with its interval: tied when it contains 0."""
    found = difference(draws, best, i, means[best], means[i])
    ci = [float(found.ci95[0, 0]), float(found.ci95[0, 1])]
    return {
        "delta": float(found.delta[0]),
        "ci95": ci,
        "p_value": float(found.p_value[0]),
        "tied_with_best": verdict(ci) != "worse",
        "training_variance": found.training_variance,
    }


def build_leaderboard(
    entries: Sequence[Run | RunGroup], sort: str = "cmc@1", n_resamples: int = 10_000, seed: int = 0
) -> dict[str, Any]:
    """The ``leaderboard.json`` content: configurations sorted by ``sort`` (highest first).

    Each row is a group of runs differing only in ``seed`` (a single run is a group of
    one). A metric's ``mean`` is the mean over seeds, ``ci95`` a two-level bootstrap
    interval over seeds and queries (query noise only for one run), ``per_seed`` each
    run's value. ``vs_best`` compares the row with the best on ``sort``: rows whose
    interval of the difference contains 0 cannot be told apart from it.

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
    groups = _as_groups(entries)
    if not groups:
        raise EmbedlabError("leaderboard: no runs to rank")
    metrics = _metrics_of(groups)
    if sort not in metrics:
        raise EmbedlabError(
            f"--sort {sort!r} is not a metric of these runs; choose one of {metrics}"
        )
    changed = changed_params([g.params for g in groups])
    rows = {
        g.name: {
            "name": g.name,
            "kind": g.runs[0].source.kind,
            "members": g.members,
            "seeds": g.seeds,
            "n_seeds": len(g.runs),
            "runs": [run.source.describe() for run in g.runs],
            "n_queries": int(np.mean([len(run.per_query) for run in g.runs])),
            "params": {key: values[number] for key, values in changed.items()},
            "metrics": {},
        }
        for number, g in enumerate(groups)
    }
    for number, metric in enumerate(metrics):
        levels, draws, means, having = _group_metrics(groups, metric, n_resamples, seed + number)
        for name, (level, run_means) in levels.items():
            rows[name]["metrics"][metric] = {
                "mean": float(level.mean[0]),
                "ci95": [float(level.ci95[0, 0]), float(level.ci95[0, 1])],
                "sd": float(level.sd[0]),
                "per_seed": [float(v) for v in run_means[:, 0]],
            }
        if metric == sort:
            best = int(np.argmax([m.mean() for m in means]))
            for i, g in enumerate(having):
                rows[g.name]["vs_best"] = (
                    {"delta": 0.0, "ci95": [0.0, 0.0], "p_value": 1.0, "tied_with_best": True}
                    if i == best
                    else _versus_best(draws, means, best, i)
                )
    ordered = sorted(
        rows.values(), key=lambda r: -r["metrics"].get(sort, {"mean": -np.inf})["mean"]
    )
    single = all(r["n_seeds"] == 1 for r in ordered)
    return {
        "sort": sort,
        "seed": seed,
        "n_resamples": n_resamples,
        "metrics": metrics,
        "params_changed": list(changed),
        "best": ordered[0]["name"],
        "tied_with_best": [
            r["name"] for r in ordered if r.get("vs_best", {}).get("tied_with_best")
        ],
        "training_variance": not single,
        "notes": [ONE_RUN_NOTE.replace("one run per side", "one run per row")] if single else [],
        "runs": ordered,
    }


def write_leaderboard(
    entries: Sequence[Run | RunGroup],
    out_dir: Path,
    sort: str = "cmc@1",
    n_resamples: int = 10_000,
    seed: int = 0,
) -> dict[str, Any]:
    """Build the leaderboard and write ``out_dir/leaderboard.json`` and ``out_dir/index.html``."""
    board = build_leaderboard(entries, sort, n_resamples, seed)
    write_json(Path(out_dir) / LEADERBOARD_JSON, board)
    atomic_write_text(Path(out_dir) / PAGE, render_leaderboard_page(board))
    return board


def _cell(value: dict[str, Any] | None) -> str:
    if not value:
        return "-"
    return f"{value['mean']:.4f} [{value['ci95'][0]:.4f}, {value['ci95'][1]:.4f}]"


def format_leaderboard_table(board: dict[str, Any], metrics: Sequence[str] | None = None) -> str:
    """The terminal leaderboard: rank, configuration, changed params, seeds, metric means
    with intervals, and ``=best`` on the rows that cannot be told apart from the best.

    Example:
        >>> board = {"sort": "cmc@1", "metrics": ["cmc@1"], "params_changed": ["lr"],
        ...          "notes": [], "runs": [{"name": "b1,b2", "params": {"lr": 0.3},
        ...          "n_seeds": 2, "n_queries": 3, "vs_best": {"tied_with_best": True},
        ...          "metrics": {"cmc@1": {"mean": 0.667, "ci95": [0.0, 1.0]}}}]}
        >>> print(format_leaderboard_table(board))
        #  configuration  lr   seeds  queries  cmc@1 [95%]              vs best
        1  b1,b2          0.3      2        3  0.6670 [0.0000, 1.0000]  =best
    """
    metrics = list(metrics or board["metrics"])
    keys = list(board["params_changed"])
    header = ["#", "configuration", *keys, "seeds", "queries", *(f"{m} [95%]" for m in metrics)]
    header.append("vs best")
    table = [header]
    for rank, run in enumerate(board["runs"], start=1):
        cells = [str(rank), str(run["name"]), *(str(run["params"].get(k)) for k in keys)]
        cells += [str(run["n_seeds"]), str(run["n_queries"])]
        cells += [_cell(run["metrics"].get(m)) for m in metrics]
        versus = run.get("vs_best")
        if versus is None:
            cells.append("-")
        elif rank == 1:
            cells.append("=best")
        else:
            cells.append("=best" if versus["tied_with_best"] else f"{versus['delta']:+.4f}")
        table.append(cells)
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    numeric = {0, len(keys) + 2, len(keys) + 3}  # rank, seeds and queries align right
    lines = []
    for row in table:
        parts = [
            cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(parts).rstrip())
    lines.extend(f"note: {note}" for note in board.get("notes", []))
    return "\n".join(lines)
