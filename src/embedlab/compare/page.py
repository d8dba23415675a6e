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

__all__ = ["QueryRows", "Tile", "render_compare_page", "render_leaderboard_page"]

TileKind = Literal["query", "relevant", "wrong"]
CELL = 96

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


def _metrics_table(metrics: Mapping[str, Mapping[str, Any]], name_a: str, name_b: str) -> str:
    rows = [
        '<table id="metrics"><tr><th class="text">metric</th>'
        f"<th>{_e(name_a)}</th><th>{_e(name_b)}</th><th>delta</th>"
        "<th>95% interval</th><th>p-value</th></tr>"
    ]
    for name, m in metrics.items():
        lo, hi = m["ci95"]
        verdict = "better" if lo > 0 else "worse" if hi < 0 else ""
        rows.append(
            f'<tr data-metric="{_e(name)}"><td class="text">{_e(name)}</td>'
            f"<td>{_number(m['a'])}</td><td>{_number(m['b'])}</td>"
            f'<td class="{verdict}">{_number(m["delta"], signed=True)}</td>'
            f"<td>[{_number(lo, True)}, {_number(hi, True)}]</td>"
            f"<td>{_p_value(m['p_value'])}</td></tr>"
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
    runs = report.get("runs", {})
    described = " &middot; ".join(
        f"{key.upper()} = <code>{_e(run.get('spec', ''))}</code> ({_e(run.get('kind', ''))}"
        + (f", {_e(str(run['rev'])[:10])}" if run.get("rev") else "")
        + ")"
        for key, run in runs.items()
    )
    body = [
        f"<h1>{_e(name_a)} &rarr; {_e(name_b)}</h1>",
        f'<p class="meta">{described}</p>',
        f'<p class="meta">{_e(report["n_queries"])} queries, matched on row_id. Intervals: '
        f"paired bootstrap over queries, {_e(report['n_resamples'])} resamples, seed "
        f'<span id="seed">{_e(report["seed"])}</span>. p-values: {_e(report["test"])}.</p>',
        "<h2>Metrics</h2>",
        _metrics_table(report["metrics"], name_a, name_b),
        "<h2>Params that changed</h2>",
        _params_table(
            {k: [v["a"], v["b"]] for k, v in report.get("params_changed", {}).items()},
            [name_a, name_b],
        ),
    ]
    by, order_by = _e(report["fixed_by"]), _e(report["order_by"])
    headings = {
        "broken": f"Broken: {by} 1 &rarr; 0 (largest drop of {order_by} first)",
        "fixed": f"Fixed: {by} 0 &rarr; 1 (largest gain of {order_by} first)",
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


def render_leaderboard_page(board: Mapping[str, Any]) -> str:
    """The leaderboard page of ``board`` (the ``leaderboard.json`` content).

    Example:
        >>> board = {"sort": "cmc@1", "seed": 0, "n_resamples": 10, "metrics": ["cmc@1"],
        ...          "params_changed": ["train.lr"], "runs": [{"name": "<b>", "kind": "folder",
        ...          "n_queries": 3, "params": {"train.lr": 0.1},
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
        '<table id="leaderboard"><tr><th>#</th><th class="text">run</th>'
        f'<th class="text">kind</th><th>queries</th>{header}</tr>'
    ]
    for rank, run in enumerate(board["runs"], start=1):
        cells = "".join(f'<td class="text">{_e(run["params"].get(k, ""))}</td>' for k in keys)
        for m in metrics:
            value = run["metrics"].get(m)
            text = (
                f"{value['mean']:.4f} [{value['ci95'][0]:.4f}, {value['ci95'][1]:.4f}]"
                if value
                else "-"
            )
            cells += f'<td class="{"sortkey" if m == sort else ""}">{text}</td>'
        rows.append(
            f'<tr data-run="{_e(run["name"])}"><td>{rank}</td><td class="text">{_e(run["name"])}'
            f'</td><td class="text">{_e(run["kind"])}</td><td>{_e(run["n_queries"])}</td>'
            f"{cells}</tr>"
        )
    rows.append("</table>")
    body = [
        f"<h1>Leaderboard: {len(board['runs'])} runs by {_e(sort)}</h1>",
        f'<p class="meta">Intervals: bootstrap of each run\'s mean over its queries, '
        f"{_e(board['n_resamples'])} resamples, seed {_e(board['seed'])}. "
        "Columns left of the metrics: the params that differ between the runs.</p>",
        *rows,
    ]
    return _document(f"embedlab leaderboard by {sort}", body)
