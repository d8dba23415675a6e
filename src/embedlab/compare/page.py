"""The compare and leaderboard pages: one self-contained HTML file each.

Everything is inline (CSS, images as ``data:`` URIs), there is no script, and a
Content-Security-Policy forbids any network access, so the page opens from disk
anywhere. Every string that comes from a run (names, paths, labels, params) goes through
:func:`html.escape`.

Tiles are framed like :mod:`embedlab.viz.grids`: the query blue, relevant items green,
others red, the distance under each.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from embedlab.viz.grids import CORRECT_COLOR, QUERY_COLOR, WRONG_COLOR, frame_width

__all__ = [
    "SEED_COLOR",
    "QueryRows",
    "Tile",
    "render_compare_page",
    "render_leaderboard_page",
    "seed_dots",
]

TileKind = Literal["query", "relevant", "wrong"]
CELL = 96

SEED_COLOR = (31, 119, 180)
"""Fill of each seed's dot next to a group's interval."""

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def _rgb(color: tuple[int, int, int]) -> str:
    return "rgb({}, {}, {})".format(*color)


_CSS = f"""
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #111; background: #fff; }}
h1 {{ font-size: 22px; margin: 0 0 4px; }} h2 {{ font-size: 18px; margin: 28px 0 8px; }}
h3 {{ font-size: 14px; margin: 16px 0 4px; font-weight: 600; }}
.meta, .note {{ color: #555; }}
table {{ border-collapse: collapse; margin: 4px 0; }}
th, td {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}
th {{ background: #f3f3f3; }} td.text, th.text {{ text-align: left; }}
td.better {{ color: {_rgb(CORRECT_COLOR)}; font-weight: 600; }}
td.worse {{ color: {_rgb(WRONG_COLOR)}; font-weight: 600; }}
tr.sorted td.sortkey, th.sortkey {{ background: #eef4ff; }}
.run-row {{ display: flex; align-items: flex-start; gap: 4px; margin: 2px 0; }}
.run-name {{ width: 120px; flex: none; font-weight: 600; padding-top: 36px;
  overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }}
figure.tile {{ margin: 0; width: {CELL}px; flex: none; text-align: center; }}
figure.tile .frame {{ box-sizing: border-box; width: {CELL}px; height: {CELL}px;
  border-width: {frame_width(CELL)}px; border-style: solid; display: flex; align-items: center;
  justify-content: center; background: #fff; overflow: hidden; }}
figure.tile img {{ width: {CELL - 2 * frame_width(CELL)}px;
  height: {CELL - 2 * frame_width(CELL)}px; object-fit: contain; image-rendering: pixelated; }}
figure.tile figcaption {{ font: 11px monospace; height: 14px; }}
figure.t-query .frame {{ border-color: {_rgb(QUERY_COLOR)}; }}
figure.t-relevant .frame {{ border-color: {_rgb(CORRECT_COLOR)}; }}
figure.t-wrong .frame {{ border-color: {_rgb(WRONG_COLOR)}; }}
.missing {{ font: 10px monospace; color: #777; word-break: break-all; padding: 2px; }}
code {{ background: #f5f5f5; padding: 0 3px; }}
svg.seeds {{ vertical-align: middle; }}
svg.seeds line.interval {{ stroke: #555; stroke-width: 2; }}
svg.seeds line.mean {{ stroke: #111; stroke-width: 2; }}
svg.seeds circle.seed {{ fill: {_rgb(SEED_COLOR)}; }}
svg.seeds text {{ font: 10px monospace; fill: #555; }}
p.warning {{ background: #fff4d6; border: 1px solid #e0b84c; padding: 6px 10px; }}
"""


def _e(value: Any) -> str:
    """Text for HTML: every string from a run goes through here."""
    return html.escape(str(value), quote=True)


@dataclass(frozen=True)
class Tile:
    """One framed picture: the query or a retrieved item."""

    kind: TileKind
    caption: str
    title: str
    uri: str | None = None


@dataclass
class QueryRows:
    """One fixed or broken query: A's top-k row above B's."""

    row_id: int
    label: str
    category: str
    path: str
    values: dict[str, tuple[float, float]]
    tiles_a: list[Tile] = field(default_factory=list)
    tiles_b: list[Tile] = field(default_factory=list)


def _number(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def _p_value(p: float) -> str:
    return f"{p:.2g}" if p < 0.001 else f"{p:.3f}"


def _tile(tile: Tile) -> str:
    inner = (
        f'<img src="{_e(tile.uri)}" alt="{_e(tile.title)}">'
        if tile.uri
        else f'<span class="missing">{_e(tile.title)}</span>'
    )
    return (
        f'<figure class="tile t-{tile.kind}" title="{_e(tile.title)}">'
        f'<div class="frame">{inner}</div><figcaption>{_e(tile.caption)}</figcaption></figure>'
    )


def _query_section(query: QueryRows, name_a: str, name_b: str) -> str:
    values = ", ".join(
        f"{_e(m)} {_number(a)} &rarr; {_number(b)}" for m, (a, b) in query.values.items()
    )
    category = f" &middot; category {_e(query.category)}" if query.category else ""
    parts = [
        f'<section class="pair" data-row-id="{_e(query.row_id)}">',
        f"<h3>row {_e(query.row_id)} &middot; label {_e(query.label)}{category} &middot; "
        f'<span class="path">{_e(query.path)}</span> &middot; {values}</h3>',
    ]
    for run, name, tiles in (("a", name_a, query.tiles_a), ("b", name_b, query.tiles_b)):
        shown = "".join(_tile(t) for t in tiles)
        if len(tiles) <= 1:  # the query alone: this run has no top-k lists
            shown += '<span class="note">no top-k lists for this run</span>'
        parts.append(
            f'<div class="run-row" data-run="{run}">'
            f'<span class="run-name" title="{_e(name)}">{_e(name)}</span>{shown}</div>'
        )
    parts.append("</section>")
    return "\n".join(parts)


def seed_dots(
    rows: Sequence[tuple[str, Sequence[float], Sequence[float]]],
    width: int = 240,
    scale: tuple[float, float] | None = None,
) -> str:
    """An inline SVG: per row (label, each seed's value, the group's 95% interval), the
    interval as a bar with the mean of the seeds as a tick and each seed as a dot.
    ``scale`` (low, high) fixes the axis, so that several plots line up.
    ``scale`` (low, high) fixes the axis, so that several plots line up.

    Example:
        >>> svg = seed_dots([("a", [0.70, 0.72], [0.69, 0.73]), ("b", [0.75], [0.74, 0.76])])
        >>> svg.count('class="seed"'), svg.count('class="interval"'), svg.startswith("<svg")
        (3, 2, True)
    """
    values = [v for _, seeds, ci in rows for v in (*seeds, *ci)]
    lo, hi = scale if scale is not None else (min(values), max(values))
    pad = (hi - lo) * 0.05 or 0.001
    lo, hi = lo - pad, hi + pad
    label_width, row_height = 16, 14
    span = width - label_width - 4

    def x(value: float) -> float:
        return label_width + (value - lo) / (hi - lo) * span

    parts = [
        f'<svg class="seeds" width="{width}" height="{row_height * len(rows) + 2}" '
        f'viewBox="0 0 {width} {row_height * len(rows) + 2}" role="img">'
    ]
    for i, (label, seeds, ci) in enumerate(rows):
        y = row_height * i + row_height / 2 + 1
        mean = sum(seeds) / len(seeds)
        parts.append(f'<text x="0" y="{y + 3:.1f}">{_e(label)}</text>')
        parts.append(
            f'<line class="interval" x1="{x(ci[0]):.1f}" x2="{x(ci[1]):.1f}" y1="{y:.1f}" '
            f'y2="{y:.1f}"><title>95% interval [{ci[0]:.4f}, {ci[1]:.4f}]</title></line>'
        )
        parts.append(
            f'<line class="mean" x1="{x(mean):.1f}" x2="{x(mean):.1f}" y1="{y - 5:.1f}" '
            f'y2="{y + 5:.1f}"><title>mean {mean:.4f}</title></line>'
        )
        parts.extend(
            f'<circle class="seed" data-value="{v!r}" cx="{x(v):.1f}" cy="{y:.1f}" r="3">'
            f"<title>{v:.4f}</title></circle>"
            for v in seeds
        )
    parts.append("</svg>")
    return "".join(parts)


def _metrics_table(metrics: Mapping[str, Mapping[str, Any]], name_a: str, name_b: str) -> str:
    rows = [
        '<table id="metrics"><tr><th class="text">metric</th>'
        f"<th>{_e(name_a)}</th><th>{_e(name_b)}</th><th>delta</th>"
        '<th>95% interval</th><th>p-value</th><th class="text">verdict</th>'
        '<th class="text">seeds (dots) and 95% interval of each side</th></tr>'
    ]
    for name, m in metrics.items():
        lo, hi = m["ci95"]
        verdict = m.get("verdict") or ("better" if lo > 0 else "worse" if hi < 0 else "")
        css = verdict if verdict in ("better", "worse") else ""
        spread = m.get("spread", {})
        cells = []
        for side in ("a", "b"):
            text = _number(m[side])
            if len(m.get("per_seed", {}).get(side, [])) > 1:
                text += f' <span class="note">(sd {_number(spread.get(side))})</span>'
            cells.append(f"<td>{text}</td>")
        dots = ""
        if "per_seed" in m and "level_ci95" in m:
            dots = seed_dots(
                [(s.upper(), m["per_seed"][s], m["level_ci95"][s]) for s in ("a", "b")]
            )
        rows.append(
            f'<tr data-metric="{_e(name)}"><td class="text">{_e(name)}</td>{"".join(cells)}'
            f'<td class="{css}">{_number(m["delta"], signed=True)}</td>'
            f"<td>[{_number(lo, True)}, {_number(hi, True)}]</td>"
            f'<td>{_p_value(m["p_value"])}</td><td class="text verdict">{_e(verdict)}</td>'
            f'<td class="text">{dots}</td></tr>'
        )
    rows.append("</table>")
    return "\n".join(rows)


def _params_table(changed: Mapping[str, Sequence[Any]], names: Sequence[str]) -> str:
    if not changed:
        return '<p class="note" id="params">No param differs.</p>'
    header = "".join(f"<th>{_e(n)}</th>" for n in names)
    rows = [f'<table id="params"><tr><th class="text">param</th>{header}</tr>']
    for key, values in changed.items():
        cells = "".join(f'<td class="text">{_e(v)}</td>' for v in values)
        rows.append(f'<tr><td class="text">{_e(key)}</td>{cells}</tr>')
    rows.append("</table>")
    return "\n".join(rows)


def _document(title: str, body: Sequence[str]) -> str:
    return "\n".join(
        [
            "<!doctype html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
            *body,
            "</body></html>",
            "",
        ]
    )


def _has_groups(report: Mapping[str, Any]) -> bool:
    groups = report.get("groups", {})
    return any(len(groups.get(s, {}).get("members", [])) > 1 for s in ("a", "b"))


def _describe_sides(report: Mapping[str, Any]) -> str:
    """``A = <spec> (kind, commit)`` per side; the members for a group of seeds."""
    groups = report.get("groups", {})
    parts = []
    for key, run in report.get("runs", {}).items():
        members = groups.get(key, {}).get("members", [])
        if len(members) > 1:
            seeds = groups[key].get("seeds", [])
            listed = ", ".join(
                f"<code>{_e(m)}</code> (seed {_e(s)})" for m, s in zip(members, seeds, strict=False)
            )
            parts.append(f"{key.upper()} = {len(members)} runs: {listed}")
            continue
        parts.append(
            f"{key.upper()} = <code>{_e(run.get('spec', ''))}</code> ({_e(run.get('kind', ''))}"
            + (f", {_e(str(run['rev'])[:10])}" if run.get("rev") else "")
            + ")"
        )
    return " &middot; ".join(parts)


def _method(report: Mapping[str, Any]) -> str:
    """How the intervals and p-values were computed, and with which seed."""
    seed = f'seed <span id="seed">{_e(report["seed"])}</span>'
    resamples = f"{_e(report['n_resamples'])} resamples"
    if report.get("training_variance"):
        paired = "paired" if report.get("paired", True) else "not paired (different queries)"
        return (
            f"{_e(report['n_queries'])} queries, {paired}. Intervals and p-values count "
            f"training variance: {_e(report['test'])}; {resamples}, {seed}."
        )
    return (
        f"{_e(report['n_queries'])} queries, matched on row_id. Intervals: paired bootstrap "
        f"over queries, {resamples}, {seed}. p-values: {_e(report['test'])}."
    )


def render_compare_page(
    report: Mapping[str, Any],
    sections: Mapping[str, Sequence[QueryRows]],
    totals: Mapping[str, int],
) -> str:
    """The compare page of ``report`` (the ``compare.json`` content).

    ``sections`` maps ``"broken"`` and ``"fixed"`` to the queries to draw (worst first);
    ``totals`` to how many there are in all (the page may show fewer).

    Example:
        >>> report = {"a": "x<1>", "b": "y", "n_queries": 2, "seed": 0, "n_resamples": 10,
        ...           "test": "t", "fixed_by": "cmc@1", "order_by": "map@5",
        ...           "params_changed": {}, "queries": {"fixed": [], "broken": []},
        ...           "metrics": {"cmc@1": {"a": 0.5, "b": 1.0, "delta": 0.5,
        ...                                 "ci95": [0.0, 1.0], "p_value": 1.0}}}
        >>> none = {"broken": [], "fixed": []}
        >>> page = render_compare_page(report, none, {"broken": 0, "fixed": 0})
        >>> "x&lt;1&gt;" in page and "x<1>" not in page
        True
    """
    name_a, name_b = str(report["a"]), str(report["b"])
    body = [
        f"<h1>{_e(name_a)} &rarr; {_e(name_b)}</h1>",
        f'<p class="meta">{_describe_sides(report)}</p>',
        f'<p class="meta">{_method(report)}</p>',
        *(f'<p class="warning note-line">{_e(note)}</p>' for note in report.get("notes", [])),
        "<h2>Metrics</h2>",
        _metrics_table(report["metrics"], name_a, name_b),
        "<h2>Params that changed</h2>",
        _params_table(
            {k: [v["a"], v["b"]] for k, v in report.get("params_changed", {}).items()},
            [name_a, name_b],
        ),
    ]
    by, order_by = _e(report["fixed_by"]), _e(report["order_by"])
    every = " in every seed" if _has_groups(report) else ""
    headings = {
        "broken": f"Broken: {by} 1 &rarr; 0{every} (largest drop of {order_by} first)",
        "fixed": f"Fixed: {by} 0 &rarr; 1{every} (largest gain of {order_by} first)",
    }
    for key in ("broken", "fixed"):
        shown = sections.get(key, [])
        total = totals.get(key, len(shown))
        count = f"{total}" if len(shown) == total else f"{len(shown)} of {total} shown"
        body.append(f'<h2 id="{key}">{headings[key]}: {count}</h2>')
        if not total:
            body.append('<p class="note">None.</p>')
        body.extend(_query_section(q, name_a, name_b) for q in shown)
        if len(shown) < total:
            body.append(f'<p class="note">All {total} row ids are in compare.json.</p>')
    body.append(
        '<p class="note">Each query: the query (blue), then its top-k gallery items, '
        "green when relevant, red when not, distance under each; "
        f"{_e(name_a)}'s row above {_e(name_b)}'s.</p>"
    )
    return _document(f"embedlab compare: {name_a} vs {name_b}", body)


def _board_cell(value: Mapping[str, Any] | None, scale: tuple[float, float] | None) -> str:
    if not value:
        return "-"
    text = f"{value['mean']:.4f} [{value['ci95'][0]:.4f}, {value['ci95'][1]:.4f}]"
    if scale is not None and value.get("per_seed"):
        text += "<br>" + seed_dots([("", value["per_seed"], value["ci95"])], 200, scale)
    return text


def _scale(board: Mapping[str, Any], metric: str) -> tuple[float, float] | None:
    """One axis for every row's dots of ``metric``: all seeds and intervals fit."""
    values = [
        v
        for run in board["runs"]
        if metric in run["metrics"]
        for v in (*run["metrics"][metric].get("per_seed", []), *run["metrics"][metric]["ci95"])
    ]
    return (min(values), max(values)) if values else None


def _versus_best(run: Mapping[str, Any], rank: int) -> str:
    versus = run.get("vs_best")
    if versus is None:
        return "<td>-</td>"
    if rank == 1:
        return '<td class="text tied">best</td>'
    if versus["tied_with_best"]:
        return (
            f'<td class="text tied">cannot be told apart ({_number(versus["delta"], True)}, '
            f"p {_p_value(versus['p_value'])})</td>"
        )
    lo, hi = versus["ci95"]
    return (
        f'<td class="text worse">{_number(versus["delta"], True)} '
        f"[{_number(lo, True)}, {_number(hi, True)}]</td>"
    )


def render_leaderboard_page(board: Mapping[str, Any]) -> str:
    """The leaderboard page of ``board`` (the ``leaderboard.json`` content): one row per
    configuration, each seed of the sort metric a dot next to the group's interval.

    Example:
        >>> board = {"sort": "cmc@1", "seed": 0, "n_resamples": 10, "metrics": ["cmc@1"],
        ...          "params_changed": ["train.lr"], "runs": [{"name": "<b>", "kind": "folder",
        ...          "n_queries": 3, "n_seeds": 1, "params": {"train.lr": 0.1},
        ...          "metrics": {"cmc@1": {"mean": 0.5, "ci95": [0.1, 0.9]}}}]}
        >>> "&lt;b&gt;" in render_leaderboard_page(board)
        True
    """
    metrics, keys = list(board["metrics"]), list(board["params_changed"])
    sort = board["sort"]
    header = "".join(f'<th class="text">{_e(k)}</th>' for k in keys) + "".join(
        f'<th class="{"sortkey" if m == sort else ""}">{_e(m)} [95%]</th>' for m in metrics
    )
    rows = [
        '<table id="leaderboard"><tr><th>#</th><th class="text">configuration</th>'
        f'<th class="text">kind</th><th>seeds</th><th>queries</th>{header}'
        f'<th class="text">vs best ({_e(sort)})</th></tr>'
    ]
    scale = _scale(board, sort)
    for rank, run in enumerate(board["runs"], start=1):
        cells = "".join(f'<td class="text">{_e(run["params"].get(k, ""))}</td>' for k in keys)
        for m in metrics:
            text = _board_cell(run["metrics"].get(m), scale if m == sort else None)
            cells += f'<td class="{"sortkey" if m == sort else ""}">{text}</td>'
        rows.append(
            f'<tr data-run="{_e(run["name"])}"><td>{rank}</td><td class="text">{_e(run["name"])}'
            f'</td><td class="text">{_e(run["kind"])}</td><td>{_e(run.get("n_seeds", 1))}</td>'
            f"<td>{_e(run['n_queries'])}</td>{cells}{_versus_best(run, rank)}</tr>"
        )
    rows.append("</table>")
    if board.get("training_variance"):
        method = (
            "Intervals: two-level bootstrap over each configuration's seeds, then its queries, "
            "Student's t with the degrees of freedom of the seed level (n seeds - 1) and the "
            "query level combined (query noise only for one seed)"
        )
    else:
        method = "Intervals: bootstrap of each run's mean over its queries"
    body = [
        f"<h1>Leaderboard: {len(board['runs'])} configurations by {_e(sort)}</h1>",
        f'<p class="meta">{method}, {_e(board["n_resamples"])} resamples, seed '
        f"{_e(board['seed'])}. Columns left of the metrics: the params that differ between "
        "the configurations (runs differing only in seed are one configuration). Dots: each "
        "seed's value; bar: the 95% interval; tick: the mean.</p>",
        *(f'<p class="warning note-line">{_e(note)}</p>' for note in board.get("notes", [])),
        *rows,
    ]
    return _document(f"embedlab leaderboard by {sort}", body)
