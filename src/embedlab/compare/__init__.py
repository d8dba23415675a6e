"""``embedlab compare``: two or more runs compared query by query.

- :mod:`~embedlab.compare.runs`: a run spec (folder, DVC experiment, git revision) -> its files;
- :mod:`~embedlab.compare.diff`: queries matched on ``row_id``, fixed/broken, changed params;
- :mod:`~embedlab.compare.stats`: paired bootstrap intervals and the sign-flip test;
- :mod:`~embedlab.compare.topk`: ``reports/topk.csv`` (written by validate) or its recomputation;
- :mod:`~embedlab.compare.images`, :mod:`~embedlab.compare.page`: the self-contained HTML page;
- :mod:`~embedlab.compare.pair`, :mod:`~embedlab.compare.leaderboard`: the two outputs;
- :mod:`~embedlab.compare.command`: the command itself;
- :mod:`~embedlab.compare.trackers`: the page and deltas sent to run B's tracker runs.
"""

from embedlab.compare.command import run_compare
from embedlab.compare.leaderboard import build_leaderboard, write_leaderboard
from embedlab.compare.pair import CompareOptions, compare_report, write_compare
from embedlab.compare.runs import Run, RunSource, load_run, resolve_run
from embedlab.compare.topk import topk_table

__all__ = [
    "CompareOptions",
    "Run",
    "RunSource",
    "build_leaderboard",
    "compare_report",
    "load_run",
    "resolve_run",
    "run_compare",
    "topk_table",
    "write_compare",
    "write_leaderboard",
]
