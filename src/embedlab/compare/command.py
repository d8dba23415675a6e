"""The ``embedlab compare`` command: resolve the runs, write the outputs, print the summary.

A spec with commas (``exp-a1,exp-a2,exp-a3``) is a group of replicates; ``--all`` groups
the experiments whose params differ only in ``seed``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from embedlab.compare.groups import RunGroup, group_by_config, group_name, split_spec
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


def check_options(options: CompareOptions) -> None:
    """One-line errors for numbers out of range (the CLI passes them through unchanged).

    Example:
        >>> try:
        ...     check_options(CompareOptions(seed=-1))
        ... except EmbedlabError as exc:
        ...     print(exc)
        --seed must be an integer >= 0, got -1
    """
    checks = [
        ("--seed", options.seed, 0),
        ("--n-resamples", options.n_resamples, 100),
        ("--max-queries", options.max_queries, 0),
        ("--top-k", options.top_k, 1),
    ]
    for flag, value, minimum in checks:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise EmbedlabError(f"{flag} must be an integer >= {minimum}, got {value!r}")


def _load_named(specs: Sequence[str], repo: Path) -> list[list[Run]]:
    """Each spec's runs (several for a group written with commas)."""
    named = []
    for spec in specs:
        runs = [load_run(resolve_run(member, repo)) for member in split_spec(spec)]
        named.append(runs)
    return named


def _load_found(known: list[RunSource], repo: Path) -> list[Run]:
    """Every experiment ``dvc exp show`` lists that is not named already (skipping broken)."""
    runs = []
    for found in list_experiments(repo):
        if any(_same(found, source) for source in known):
            continue
        try:
            runs.append(load_run(found))
        except EmbedlabError as exc:  # found by --all: skipped
            log.warning("compare: skipping %s (%s)", found.name, exc)
        known.append(found)
    return runs


def _number_duplicates(runs: list[Run]) -> None:
    """Two runs with the same name (two folders called ``run``): number them."""
    names = [run.name for run in runs]
    if len(set(names)) == len(names):
        return
    for i, run in enumerate(runs):
        source = run.source
        run.source = RunSource(
            source.spec, f"{source.name}#{i + 1}", source.kind, source.root, source.rev
        )


def _groups(specs: Sequence[str], all_runs: bool, repo: Path, stream: TextIO) -> list[RunGroup]:
    named = _load_named(specs, repo)
    found = _load_found([r.source for runs in named for r in runs], repo) if all_runs else []
    _number_duplicates([run for runs in named for run in runs] + found)
    if not all_runs:
        return [RunGroup(group_name([r.name for r in runs]), runs) for runs in named]
    groups, notes = group_by_config([run for runs in named for run in runs] + found)
    for note in notes:
        stream.write(f"note: {note}\n")
    return groups


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
    """Compare the runs or groups named by ``specs`` (two: a comparison; more or
    ``all_runs``: a leaderboard of configurations); write the outputs into ``out`` and
    return that folder."""
    options = options or CompareOptions()
    stream = stream or sys.stdout
    if not all_runs and len(specs) < 2:
        raise EmbedlabError("compare: name two runs (or more for a leaderboard), or pass --all")
    check_options(options)
    groups = _groups(specs, all_runs, repo, stream)
    leaderboard = all_runs or len(groups) > 2
    names = [group.name for group in groups]
    out = Path(out) if out is not None else default_out_dir(names, leaderboard, repo)
    if leaderboard:
        if not groups:
            raise EmbedlabError("compare --all: no run with reports/per_query.csv found")
        board = write_leaderboard(groups, out, sort, options.n_resamples, options.seed)
        stream.write(format_leaderboard_table(board) + "\n")
    else:
        a, b = groups
        report = write_compare(a, b, out, options)
        stream.write(format_compare_table(report) + "\n")
        last_b = b.runs[0] if len(b.runs) == 1 else None  # a group has no one run to log to
        if trackers and last_b is not None and log_to_trackers(last_b, report, out):
            stream.write(f"logged to the tracker runs of {b.name}: {', '.join(last_b.run_ids)}\n")
    stream.write(f"page: {out / 'index.html'}\n")
    return out
