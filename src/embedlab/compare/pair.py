"""Two runs compared: ``compare.json`` (deltas, intervals, p-values, fixed/broken) and the page."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from embedlab.compare.diff import (
    AlignedQueries,
    align_queries,
    changed_params,
    fixed_and_broken,
    fixed_by,
    order_metric,
)
from embedlab.compare.images import MANIFEST, ImageLookup
from embedlab.compare.page import QueryRows, Tile, render_compare_page
from embedlab.compare.runs import Run
from embedlab.compare.stats import TEST_NAME, bootstrap_ci, sign_flip_p_values
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


def _seeds(seed: int) -> tuple[int, int]:
    """Independent streams for the bootstrap and the test, both fixed by ``seed``."""
    bootstrap, test = np.random.SeedSequence(seed).spawn(2)
    return int(bootstrap.generate_state(1)[0]), int(test.generate_state(1)[0])


def compare_report(
    a: Run,
    b: Run,
    options: CompareOptions = CompareOptions(),
    aligned: AlignedQueries | None = None,
) -> dict[str, Any]:
    """The ``compare.json`` content for runs ``a`` and ``b`` (see docs/compare-runs.md).

    Example:
        >>> from embedlab.compare.runs import RunSource
        >>> def run(name, hits):
        ...     table = pd.DataFrame({"row_id": range(4), "path": list("wxyz"), "cmc@1": hits})
        ...     return Run(RunSource(name, name, "folder", Path(name)), table)
        >>> report = compare_report(run("a", [1.0, 1, 0, 0]), run("b", [1.0, 0, 1, 1]))
        >>> report["metrics"]["cmc@1"]["delta"], report["queries"]
        (0.25, {'fixed': [2, 3], 'broken': [1]})
    """
    aligned = aligned or align_queries(a.per_query, b.per_query, a.name, b.name)
    differences = aligned.differences()
    seed_bootstrap, seed_test = _seeds(options.seed)
    intervals = bootstrap_ci(differences, options.n_resamples, seed_bootstrap)
    p_values = sign_flip_p_values(differences, options.n_resamples, seed_test)
    metrics = {}
    for j, name in enumerate(aligned.metrics):
        mean_a, mean_b = float(aligned.a[name].mean()), float(aligned.b[name].mean())
        metrics[name] = {
            "a": mean_a,
            "b": mean_b,
            "delta": float(differences[:, j].mean()),
            "ci95": [float(intervals[j, 0]), float(intervals[j, 1])],
            "p_value": float(p_values[j]),
        }
    by, order_by = fixed_by(aligned.metrics), order_metric(aligned.metrics)
    return {
        "a": a.name,
        "b": b.name,
        "n_queries": len(aligned.a),
        "metrics": metrics,
        "queries": fixed_and_broken(aligned, by=by, order_by=order_by),
        "seed": options.seed,
        "n_resamples": options.n_resamples,
        "test": TEST_NAME,
        "fixed_by": by,
        "order_by": order_by,
        "metrics_only_in": {"a": aligned.only_a, "b": aligned.only_b},
        "params_changed": {
            key: {"a": va, "b": vb}
            for key, (va, vb) in changed_params([a.params, b.params]).items()
        },
        "runs": {"a": a.source.describe(), "b": b.source.describe()},
    }


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
    # Folder runs carry their own data/prepared; git runs use the repo's (theirs is in
    # the DVC cache only). Pictures are drawn only from a manifest that matches the run.
    manifest = run.source.root / MANIFEST
    if not manifest.is_file():
        log.warning("compare: no %s for run '%s': frames without pictures", manifest, run.name)
        return ImageLookup.empty()
    lookup = ImageLookup.from_root(run.source.root)
    if lookup.agrees_with(run.per_query):
        return lookup
    log.warning(
        "compare: %s does not list the queries of run '%s' (another prepare?): "
        "frames without pictures",
        manifest,
        run.name,
    )
    return ImageLookup.empty()


def page_sections(
    a: Run, b: Run, report: dict[str, Any], aligned: AlignedQueries, options: CompareOptions
) -> dict[str, list[QueryRows]]:
    """The fixed and broken queries to draw, worst first, at most ``max_queries`` each."""
    topk_a, topk_b = load_topk(a, options.top_k), load_topk(b, options.top_k)
    images_a, images_b = _images_for(a), _images_for(b)
    grouped_a = dict(tuple(topk_a.groupby("row_id"))) if topk_a is not None else None
    grouped_b = dict(tuple(topk_b.groupby("row_id"))) if topk_b is not None else None
    table_a = aligned.a.set_index("row_id")
    table_b = aligned.b.set_index("row_id")
    shown = [report["fixed_by"], report["order_by"]]
    sections: dict[str, list[QueryRows]] = {}
    for key in ("broken", "fixed"):
        rows = []
        for row_id in report["queries"][key][: options.max_queries]:
            row_a, row_b = table_a.loc[row_id], table_b.loc[row_id]
            path = str(row_a["path"])
            rows.append(
                QueryRows(
                    row_id=int(row_id),
                    label=str(row_a["label"]),
                    category=str(row_a["category"]),
                    path=path,
                    values={m: (float(row_a[m]), float(row_b[m])) for m in dict.fromkeys(shown)},
                    tiles_a=_tiles(
                        row_id,
                        path,
                        grouped_a.get(row_id) if grouped_a is not None else None,
                        images_a,
                    ),
                    tiles_b=_tiles(
                        row_id,
                        path,
                        grouped_b.get(row_id) if grouped_b is not None else None,
                        images_b,
                    ),
                )
            )
        sections[key] = rows
    return sections


def write_compare(
    a: Run, b: Run, out_dir: Path, options: CompareOptions = CompareOptions()
) -> dict[str, Any]:
    """Compare ``a`` with ``b``; write ``out_dir/compare.json`` and ``out_dir/index.html``."""
    aligned = align_queries(a.per_query, b.per_query, a.name, b.name)
    report = compare_report(a, b, options, aligned)
    sections = page_sections(a, b, report, aligned, options)
    totals = {key: len(report["queries"][key]) for key in ("broken", "fixed")}
    write_json(out_dir / COMPARE_JSON, report)
    atomic_write_text(out_dir / PAGE, render_compare_page(report, sections, totals))
    return report


def format_compare_table(report: dict[str, Any]) -> str:
    """The terminal summary: one line per metric, then the fixed/broken counts.

    Example:
        >>> report = {"a": "a", "b": "b", "n_queries": 4, "seed": 0, "fixed_by": "cmc@1",
        ...           "queries": {"fixed": [2, 3], "broken": [1]},
        ...           "metrics": {"cmc@1": {"a": 0.5, "b": 0.75, "delta": 0.25,
        ...                                 "ci95": [-0.25, 0.75], "p_value": 0.625}}}
        >>> print(format_compare_table(report))
        a -> b: 4 queries, seed 0
        metric        a        b    delta  95% interval          p
        cmc@1    0.5000   0.7500  +0.2500  [-0.2500, +0.7500]  0.625
        fixed 2, broken 1 (by cmc@1)
    """
    width = max(len("metric"), *(len(m) for m in report["metrics"]))
    lines = [
        f"{report['a']} -> {report['b']}: {report['n_queries']} queries, seed {report['seed']}",
        f"{'metric':<{width}}  {'a':>7}  {'b':>7}  {'delta':>7}  {'95% interval':<20}  p",
    ]
    for name, m in report["metrics"].items():
        lo, hi = m["ci95"]
        p = f"{m['p_value']:.2g}" if m["p_value"] < 0.001 else f"{m['p_value']:.3f}"
        lines.append(
            f"{name:<{width}}  {m['a']:>7.4f}  {m['b']:>7.4f}  {m['delta']:>+7.4f}  "
            f"{f'[{lo:+.4f}, {hi:+.4f}]':<20}  {p}"
        )
    queries = report["queries"]
    lines.append(
        f"fixed {len(queries['fixed'])}, broken {len(queries['broken'])} (by {report['fixed_by']})"
    )
    return "\n".join(lines)
