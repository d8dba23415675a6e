"""``embedlab compare``: two or more runs compared query by query.

- :mod:`~embedlab.compare.runs`: a run spec (folder, DVC experiment, git revision) -> its files;
- :mod:`~embedlab.compare.diff`: queries matched on ``row_id``, fixed/broken, changed params;
- :mod:`~embedlab.compare.stats`: paired bootstrap intervals and the sign-flip test;
- :mod:`~embedlab.compare.topk`: ``reports/topk.csv`` (written by validate) or its recomputation;
- :mod:`~embedlab.compare.images`, :mod:`~embedlab.compare.page`: the self-contained HTML page;
- :mod:`~embedlab.compare.pair`, :mod:`~embedlab.compare.leaderboard`: the two outputs;
- :mod:`~embedlab.compare.command`: the command itself;
- :mod:`~embedlab.compare.trackers`: the page and deltas sent to run B's tracker runs.

Names are imported lazily, so the validate stage's ``from embedlab.compare.topk import
topk_table`` does not load (nor depend on) the page, the statistics or git.
"""

from __future__ import annotations

from embedlab.lazy import lazy_exports

_PUBLIC = {
    "CompareOptions": "embedlab.compare.pair",
    "Run": "embedlab.compare.runs",
    "RunSource": "embedlab.compare.runs",
    "build_leaderboard": "embedlab.compare.leaderboard",
    "compare_report": "embedlab.compare.pair",
    "load_run": "embedlab.compare.runs",
    "resolve_run": "embedlab.compare.runs",
    "run_compare": "embedlab.compare.command",
    "topk_table": "embedlab.compare.topk",
    "write_compare": "embedlab.compare.pair",
    "write_leaderboard": "embedlab.compare.leaderboard",
}

__all__ = sorted(_PUBLIC)

__getattr__ = lazy_exports(__name__, _PUBLIC)
