"""The ``embedlab compare`` command: resolve the runs, write the outputs, print the summary."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from embedlab.compare.leaderboard import format_leaderboard_table, write_leaderboard
from embedlab.compare.pair import CompareOptions, format_compare_table, write_compare
from embedlab.compare.runs import Run, RunSource, list_experiments, load_run, resolve_run, safe_name
from embedlab.compare.trackers import log_to_trackers
from embedlab.errors import EmbedlabError

__all__ = ["default_out_dir", "run_compare"]

log = logging.getLogger("embedlab")

COMPARE_ROOT = Path("reports") / "compare"


def default_out_dir(names: Sequence[str], leaderboard: bool, repo: Path = Path(".")) -> Path:
    """``reports/compare/<A>_vs_<B>/`` for two runs, ``reports/compare/leaderboard/`` else.

    Example:
        >>> default_out_dir(["HEAD~1", "lr-3e-3"], leaderboard=False).as_posix()
        'reports/compare/HEAD_1_vs_lr-3e-3'
    """
    if leaderboard:
        return repo / COMPARE_ROOT / "leaderboard"
    return repo / COMPARE_ROOT / f"{safe_name(names[0])}_vs_{safe_name(names[1])}"


def _same(a: RunSource, b: RunSource) -> bool:
    return (a.rev, a.root) == (b.rev, b.root) if a.rev or b.rev else a.root == b.root


def _sources(specs: Sequence[str], all_runs: bool, repo: Path) -> list[RunSource]:
    sources = [resolve_run(spec, repo) for spec in specs]
    if all_runs:
        for found in list_experiments(repo):
            if not any(_same(found, known) for known in sources):
                sources.append(found)
    return sources


def run_compare(
    specs: Sequence[str],
    out: Path | None = None,
    *,
    all_runs: bool = False,
    sort: str = "cmc@1",
    options: CompareOptions | None = None,
    trackers: bool = True,
    repo: Path = Path("."),
    stream: TextIO | None = None,
) -> Path:
    """Compare the runs named by ``specs`` (two: a comparison; more or ``all_runs``: a
    leaderboard); write the outputs into ``out`` and return that folder."""
    options = options or CompareOptions()
    stream = stream or sys.stdout
    if not all_runs and len(specs) < 2:
        raise EmbedlabError("compare: name two runs (or more for a leaderboard), or pass --all")
    if options.n_resamples < 100:
        raise EmbedlabError(f"--resamples must be >= 100, got {options.n_resamples}")
    if options.max_queries < 0:
        raise EmbedlabError(f"--max-queries must be >= 0, got {options.max_queries}")
    if options.top_k < 1:
        raise EmbedlabError(f"--top-k must be >= 1, got {options.top_k}")
    sources = _sources(specs, all_runs, repo)
    runs: list[Run] = []
    for number, source in enumerate(sources):
        try:
            runs.append(load_run(source))
        except EmbedlabError as exc:
            if number < len(specs):  # named by the user: an error; found by --all: skipped
                raise
            log.warning("compare: skipping %s (%s)", source.name, exc)
    leaderboard = all_runs or len(runs) > 2
    names = [run.name for run in runs]
    if len(set(names)) < len(names):  # e.g. two folders both called "run": number them
        names = [f"{name}#{i + 1}" for i, name in enumerate(names)]
        for run, name in zip(runs, names, strict=True):
            run.source = RunSource(
                run.source.spec, name, run.source.kind, run.source.root, run.source.rev
            )
    out = Path(out) if out is not None else default_out_dir(names, leaderboard, repo)
    if leaderboard:
        if not runs:
            raise EmbedlabError("compare --all: no run with reports/per_query.csv found")
        board = write_leaderboard(runs, out, sort, options.n_resamples, options.seed)
        stream.write(format_leaderboard_table(board) + "\n")
    else:
        a, b = runs
        report = write_compare(a, b, out, options)
        stream.write(format_compare_table(report) + "\n")
        if trackers and log_to_trackers(b, report, out):
            stream.write(f"logged to the tracker runs of {b.name}: {', '.join(b.run_ids)}\n")
    stream.write(f"page: {out / 'index.html'}\n")
    return out
