"""Two runs, or two groups of seeds, compared: ``compare.json`` and the page.

A group is the replicates of one configuration (``exp-a1,exp-a2,exp-a3``); a single run is
a group of one. The statistics are :mod:`embedlab.compare.groupstats`' (seed-aware for
groups, query-only with a plain note for one run per side); fixed and broken queries are
those every seed agrees on (:func:`embedlab.compare.groups.consistent_changes`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from embedlab.compare.diff import changed_params, fixed_by, order_metric
from embedlab.compare.groups import RunGroup, consistent_changes
from embedlab.compare.groupstats import group_stats, split_seeds
from embedlab.compare.images import MANIFEST, ImageLookup
from embedlab.compare.page import QueryRows, Tile, render_compare_page
from embedlab.compare.runs import Run, enclosing_repository
from embedlab.compare.topk import load_topk
from embedlab.io import atomic_write_text, write_json

__all__ = [
    "CompareOptions",
    "compare_report",
    "format_compare_table",
    "page_sections",
    "write_compare",
]

log = logging.getLogger("embedlab")

COMPARE_JSON = "compare.json"
PAGE = "index.html"


@dataclass(frozen=True)
class CompareOptions:
    """Knobs of a comparison: randomness, resamples and how much the page draws."""

    seed: int = 0
    n_resamples: int = 10_000
    top_k: int = 5
    max_queries: int = 50


_seeds = split_seeds  # the bootstrap's and the test's streams (tests recompute them)


def _group(side: Run | RunGroup) -> RunGroup:
    return side if isinstance(side, RunGroup) else RunGroup(side.name, [side])


def _describe(group: RunGroup) -> dict[str, Any]:
    return {
        "members": group.members,
        "seeds": group.seeds,
        "runs": [run.source.describe() for run in group.runs],
    }


def compare_report(
    a: Run | RunGroup, b: Run | RunGroup, options: CompareOptions = CompareOptions()
) -> dict[str, Any]:
    """The ``compare.json`` content for runs or groups ``a`` and ``b`` (docs/compare-runs.md).

    Example:
        >>> from embedlab.compare.runs import RunSource
        >>> def run(name, hits):
        ...     table = pd.DataFrame({"row_id": range(4), "path": list("wxyz"), "cmc@1": hits})
        ...     return Run(RunSource(name, name, "folder", Path(name)), table)
        >>> report = compare_report(run("a", [1.0, 1, 0, 0]), run("b", [1.0, 0, 1, 1]))
        >>> report["metrics"]["cmc@1"]["delta"], report["queries"], report["training_variance"]
        (0.25, {'fixed': [2, 3], 'broken': [1]}, False)
    """
    a, b = _group(a), _group(b)
    found = group_stats(a, b, options.n_resamples, options.seed)
    metrics = list(found.metrics)
    by, order_by = fixed_by(metrics), order_metric(metrics)
    changes = consistent_changes(a, b, by=by, order_by=order_by)
    first_a, first_b = a.runs[0], b.runs[0]
    return {
        "a": a.name,
        "b": b.name,
        "n_queries": found.n_queries,
        "metrics": found.metrics,
        "queries": {"fixed": changes["fixed"], "broken": changes["broken"]},
        "seed": options.seed,
        "n_resamples": options.n_resamples,
        "test": found.test,
        "training_variance": found.training_variance,
        "notes": found.notes,
        "paired": found.paired,
        "groups": {"a": _describe(a), "b": _describe(b)},
        "flipping": changes["flipping"],
        "fixed_by": by,
        "order_by": order_by,
        "metrics_only_in": {
            "a": [m for m in _metric_names(a) if m not in metrics],
            "b": [m for m in _metric_names(b) if m not in metrics],
        },
        "params_changed": {
            key: {"a": va, "b": vb} for key, (va, vb) in changed_params(_params(a, b)).items()
        },
        "runs": {"a": first_a.source.describe(), "b": first_b.source.describe()},
    }


def _params(a: RunGroup, b: RunGroup) -> list[dict[str, Any]]:
    """Two runs: all their params (a seed that differs shows); groups: the configurations."""
    if len(a.runs) == len(b.runs) == 1:
        return [a.runs[0].params, b.runs[0].params]
    return [a.params, b.params]


def _metric_names(group: RunGroup) -> list[str]:
    from embedlab.compare.runs import metric_columns

    return list(dict.fromkeys(m for run in group.runs for m in metric_columns(run.per_query)))


def _tiles(
    row_id: int, query_path: str, topk: pd.DataFrame | None, images: ImageLookup
) -> list[Tile]:
    tiles = [Tile("query", "query", f"{query_path} (row {row_id})", images.uri(row_id))]
    if topk is None:
        return tiles
    for item in topk.itertuples(index=False):
        path = str(item.gallery_path) or images.path(item.gallery_row_id) or ""
        tiles.append(
            Tile(
                "relevant" if item.relevant else "wrong",
                f"{item.distance:.3f}",
                f"{path} (row {item.gallery_row_id})",
                images.uri(item.gallery_row_id),
            )
        )
    return tiles


def _images_for(run: Run) -> ImageLookup:
    # Folder runs carry their own data/prepared (or sit inside a repository that does);
    # git runs use the repo's (theirs is in the DVC cache only). Pictures are drawn only
    # from a manifest that matches the run.
    found = run.source.root
    if not (found / MANIFEST).is_file() and run.source.kind == "folder":
        found = enclosing_repository(found) or found
    if not (found / MANIFEST).is_file():
        log.warning(
            "compare: no %s for run '%s': frames without pictures",
            run.source.root / MANIFEST,
            run.name,
        )
        return ImageLookup.empty()
    manifest = found / MANIFEST
    lookup = ImageLookup.from_root(found)
    if lookup.agrees_with(run.per_query):
        return lookup
    log.warning(
        "compare: %s does not list the queries of run '%s' (another prepare?): "
        "frames without pictures",
        manifest,
        run.name,
    )
    return ImageLookup.empty()


def _query_values(group: RunGroup, metrics: list[str]) -> pd.DataFrame:
    """Per query (by row id), the group's mean over its runs of each of ``metrics``."""
    tables = [run.per_query.set_index("row_id")[metrics] for run in group.runs]
    return pd.concat(tables).groupby(level=0).mean()


def page_sections(
    a: RunGroup, b: RunGroup, report: dict[str, Any], options: CompareOptions
) -> dict[str, list[QueryRows]]:
    """The fixed and broken queries to draw, worst first, at most ``max_queries`` each.

    Top-k rows and pictures are those of each group's first run; the values shown are the
    group means over seeds.
    """
    first_a, first_b = a.runs[0], b.runs[0]
    topk_a, topk_b = load_topk(first_a, options.top_k), load_topk(first_b, options.top_k)
    images_a, images_b = _images_for(first_a), _images_for(first_b)
    grouped_a = dict(tuple(topk_a.groupby("row_id"))) if topk_a is not None else None
    grouped_b = dict(tuple(topk_b.groupby("row_id"))) if topk_b is not None else None
    shown = list(dict.fromkeys([report["fixed_by"], report["order_by"]]))
    values_a, values_b = _query_values(a, shown), _query_values(b, shown)
    described = first_a.per_query.set_index("row_id")
    sections: dict[str, list[QueryRows]] = {}
    for key in ("broken", "fixed"):
        rows = []
        for row_id in report["queries"][key][: options.max_queries]:
            row = described.loc[row_id]
            path = str(row["path"])
            tiles = []
            for grouped, images in ((grouped_a, images_a), (grouped_b, images_b)):
                found = grouped.get(row_id) if grouped is not None else None
                tiles.append(_tiles(row_id, path, found, images))
            rows.append(
                QueryRows(
                    row_id=int(row_id),
                    label=str(row["label"]),
                    category=str(row["category"]),
                    path=path,
                    values={
                        m: (float(values_a.at[row_id, m]), float(values_b.at[row_id, m]))
                        for m in shown
                    },
                    tiles_a=tiles[0],
                    tiles_b=tiles[1],
                )
            )
        sections[key] = rows
    return sections


def write_compare(
    a: Run | RunGroup, b: Run | RunGroup, out_dir: Path, options: CompareOptions = CompareOptions()
) -> dict[str, Any]:
    """Compare ``a`` with ``b``; write ``out_dir/compare.json`` and ``out_dir/index.html``."""
    a, b = _group(a), _group(b)
    report = compare_report(a, b, options)
    sections = page_sections(a, b, report, options)
    totals = {key: len(report["queries"][key]) for key in ("broken", "fixed")}
    write_json(out_dir / COMPARE_JSON, report)
    atomic_write_text(out_dir / PAGE, render_compare_page(report, sections, totals))
    return report


def _p(p: float) -> str:
    return f"{p:.2g}" if p < 0.001 else f"{p:.3f}"


def _side(report: dict[str, Any], side: str) -> str:
    k = len(report["groups"][side]["members"])
    return f"{k} seed" + ("s" if k > 1 else "")


def format_compare_table(report: dict[str, Any]) -> str:
    """The terminal summary: one line per metric, the fixed/broken counts, then the notes.

    Each group's value is its mean over seeds, with the spread (sd) across seeds when it
    has more than one.

    Example:
        >>> report = {"a": "a", "b": "b", "n_queries": 4, "seed": 0, "fixed_by": "cmc@1",
        ...           "groups": {"a": {"members": ["a"]}, "b": {"members": ["b"]}},
        ...           "queries": {"fixed": [2, 3], "broken": [1]}, "notes": ["query noise only"],
        ...           "flipping": {"a": 0, "b": 0},
        ...           "metrics": {"cmc@1": {"a": 0.5, "b": 0.75, "delta": 0.25,
        ...                                 "spread": {"a": 0.0, "b": 0.0},
        ...                                 "ci95": [-0.25, 0.75], "p_value": 0.625,
        ...                                 "verdict": "within noise"}}}
        >>> print(format_compare_table(report))
        a -> b: 4 queries, seed 0
        metric        a        b    delta  95% interval          p      verdict
        cmc@1    0.5000   0.7500  +0.2500  [-0.2500, +0.7500]  0.625  within noise
        fixed 2, broken 1 (by cmc@1)
        note: query noise only
    """
    groups = any(len(report["groups"][s]["members"]) > 1 for s in ("a", "b"))
    width = max(len("metric"), *(len(m) for m in report["metrics"]))
    head = f"{report['a']} -> {report['b']}: "
    if groups:
        head += f"{_side(report, 'a')} vs {_side(report, 'b')}, "
    lines = [head + f"{report['n_queries']} queries, seed {report['seed']}"]
    cell = 17 if groups else 7
    lines.append(
        f"{'metric':<{width}}  {'a':>{cell}}  {'b':>{cell}}  {'delta':>7}  "
        f"{'95% interval':<20}  {'p':<5}  verdict"
    )
    for name, m in report["metrics"].items():
        lo, hi = m["ci95"]
        values = []
        for side in ("a", "b"):
            text = f"{m[side]:.4f}"
            if len(report["groups"][side]["members"]) > 1:
                text += f" (sd {m['spread'][side]:.4f})"
            values.append(f"{text:>{cell}}")
        lines.append(
            f"{name:<{width}}  {values[0]}  {values[1]}  {m['delta']:>+7.4f}  "
            f"{f'[{lo:+.4f}, {hi:+.4f}]':<20}  {_p(m['p_value']):<5}  {m['verdict']}"
        )
    queries = report["queries"]
    counts = (
        f"fixed {len(queries['fixed'])}, broken {len(queries['broken'])} (by {report['fixed_by']}"
    )
    if groups:
        flips = report["flipping"]
        counts += (
            f", in every seed); queries flipping between seeds: a {flips['a']}, b {flips['b']}"
        )
    else:
        counts += ")"
    lines.append(counts)
    lines.extend(f"note: {note}" for note in report.get("notes", []))
    return "\n".join(lines)
