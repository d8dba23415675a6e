"""The ``embedlab`` command line: ``search``, ``export``, ``compare``, ``sync`` and more.

Each subcommand is one entry of :data:`COMMANDS`: a function that declares its arguments
and one that runs it. User errors (:class:`embedlab.errors.EmbedlabError`) print one
line ``error: ...`` and exit with status 2, like the pipeline stages.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, TextIO

from embedlab.errors import EmbedlabError

__all__ = ["COMMANDS", "build_parser", "format_table", "main"]


@dataclass(frozen=True)
class Command:
    """One subcommand: its help line, its arguments and what it does."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    """Argument errors are one ``error: ...`` line and exit 2, like every other user error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer ``>= minimum``, else a message naming the bound.

    >>> at_least(0)("3")
    3
    >>> at_least(0)("-1")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: must be an integer >= 0, got '-1'
    """

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


# ---------------------------------------------------------------------------- search
# Literal copies (checked by the tests), so building the parser imports neither torch nor
# pandas: `embedlab --help` and argument errors answer at once.
GALLERY_CHOICES = ("all", "gallery", "train", "validation")
EXPORT_FORMATS = ("onnx", "torchscript")


def _search_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH", help="query images or folders of them")
    parser.add_argument(
        "-k", "--top-k", type=at_least(1), default=5, help="neighbours per query (5)"
    )
    parser.add_argument(
        "--rerank",
        type=int,
        default=0,
        metavar="N",
        help="re-order each query's first N with the pairwise re-ranker (models/reranker/; 0: off)",
    )
    parser.add_argument(
        "--gallery",
        choices=GALLERY_CHOICES,
        default="all",
        help="rows to search: all, the is_gallery rows, or one split (all)",
    )
    parser.add_argument("--out", type=Path, help="also draw the retrieval grid into this PNG")
    parser.add_argument(
        "--embeddings",
        type=Path,
        default=Path("data/embeddings"),
        help="the embed stage's folder (data/embeddings)",
    )
    parser.add_argument(
        "--models",
        type=Path,
        default=None,
        help="the extractor's folder (default: models/ beside data/)",
    )
    parser.add_argument(
        "--index",
        choices=("exact", "faiss"),
        default=None,
        help="index to search (default: the one embed.index built)",
    )
    parser.add_argument(
        "--exclude-self",
        action="store_true",
        help="skip a query's own row when the query is an image of the dataset",
    )
    parser.add_argument(
        "--max-grid-rows", type=at_least(1), default=32, help="queries drawn in --out at most (32)"
    )
    parser.add_argument(
        "--threshold",
        default=None,
        metavar="T",
        help="mark neighbours at or beyond a distance (0.83), or beyond the distance validate "
        "chose at a false match rate (fmr=0.001, from reports/thresholds.json), as no match",
    )
    parser.add_argument(
        "--thresholds",
        type=Path,
        default=None,
        help="the validate stage's thresholds (default: reports/thresholds.json beside data/)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the results as one JSON document"
    )


def format_table(result: object, query: int, out: TextIO) -> None:
    """Print one query's neighbours as ``rank  path  label  distance`` columns (and
    ``match``: yes, or "no match" beyond the threshold, when a threshold was given).

    Example:
        >>> import io, numpy as np
        >>> from embedlab.embedding.searcher import SearchResult
        >>> r = SearchResult(["q.png"], np.array([[4, -1]]), np.array([[0.5, np.inf]]),
        ...                  np.array([[7, -1]]), [["a/b.png", ""]], [["/d/a/b.png", ""]])
        >>> buffer = io.StringIO(); format_table(r, 0, buffer); print(buffer.getvalue().strip())
        query: q.png
        rank  path     label  distance
           1  a/b.png      7    0.5000
        >>> r.threshold, r.matches = 0.4, np.array([[False, False]])
        >>> buffer = io.StringIO(); format_table(r, 0, buffer); print(buffer.getvalue().strip())
        query: q.png
        rank  path     label  distance  match (distance < 0.4000)
           1  a/b.png      7    0.5000  no match
    """
    from embedlab.embedding.searcher import SearchResult

    assert isinstance(result, SearchResult)
    found = [r for r in range(result.ids.shape[1]) if result.ids[query, r] >= 0]
    paths = [result.paths[query][r] for r in found]
    width = max([len("path"), *(len(p) for p in paths)])
    out.write(f"query: {result.queries[query]}\n")
    decided = result.matches is not None and result.threshold is not None
    head = f"  match (distance < {result.threshold:.4f})" if decided else ""
    out.write(f"rank  {'path':<{width}}  label  distance{head}\n")
    for rank, path in zip(found, paths, strict=True):
        label, distance = int(result.labels[query, rank]), float(result.distances[query, rank])
        line = f"{rank + 1:>4}  {path:<{width}}  {label:>5}  {distance:>8.4f}"
        if decided:
            assert result.matches is not None
            line += "  yes" if result.matches[query, rank] else "  no match"
        out.write(line + "\n")
    if not found:
        out.write("(no gallery item)\n")


def _run_search(args: argparse.Namespace) -> int:
    import json

    from embedlab.embedding.searcher import Searcher, expand_image_paths
    from embedlab.models.thresholds import parse_threshold

    if args.out is not None and args.out.suffix.lower() != ".png":
        raise EmbedlabError(f"--out {args.out}: the grid is written as PNG, name it *.png")
    if args.threshold is not None:
        parse_threshold(args.threshold)  # a malformed value fails before any work
    queries = expand_image_paths(args.paths)
    searcher = Searcher.load(
        args.embeddings,
        gallery=args.gallery,
        model_dir=args.models,
        index=args.index,
        thresholds=args.thresholds,
    )
    if args.threshold is not None:
        searcher.resolve_threshold(args.threshold)  # an unknown rate fails before embedding
    result = searcher.search(
        [str(q) for q in queries],
        k=args.top_k,
        exclude_self=args.exclude_self,
        rerank=args.rerank,
        threshold=args.threshold,
    )
    if args.json:
        sys.stdout.write(json.dumps(result.to_json(), indent=2) + "\n")
    else:
        for number in range(len(queries)):
            if number:
                sys.stdout.write("\n")
            format_table(result, number, sys.stdout)
    if args.out is not None:
        _write_grid(result, queries, args.out, args.max_grid_rows)
        (sys.stderr if args.json else sys.stdout).write(f"\ngrid written to {args.out}\n")
    return 0


def _write_grid(result: object, queries: Sequence[Path], out: Path, max_rows: int) -> None:
    """The validation pictures' drawing: query, then top-k framed green/red with distances.

    A frame is green when the item has the query's label; for a query that is not an
    image of the dataset (label unknown) every retrieved frame is green. With a
    threshold, items at or beyond it are drawn as no match (grey frame, faded, captioned).
    """
    from embedlab.data.datasets import load_image
    from embedlab.embedding.searcher import SearchResult
    from embedlab.io import atomic_path
    from embedlab.viz import GridRow, draw_retrieval_grid

    assert isinstance(result, SearchResult)
    if len(queries) > max_rows:
        sys.stderr.write(f"warning: drawing the first {max_rows} of {len(queries)} queries\n")
    rows = []
    for number, query in enumerate(queries[:max_rows]):
        found = [r for r in range(result.ids.shape[1]) if result.ids[number, r] >= 0]
        query_label = result.query_labels[number] if result.query_labels else None
        rows.append(
            GridRow(
                query=load_image(str(query)),
                retrieved=[load_image(result.files[number][r]) for r in found],
                distances=[float(result.distances[number, r]) for r in found],
                relevant=[
                    query_label is None or int(result.labels[number, r]) == query_label
                    for r in found
                ],
                matched=None
                if result.matches is None
                else [bool(result.matches[number, r]) for r in found],
            )
        )
    grid = draw_retrieval_grid(rows)
    with atomic_path(out) as tmp:
        grid.save(tmp, format="PNG")


# ---------------------------------------------------------------------------- export
def _export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format", choices=EXPORT_FORMATS, default="onnx", dest="fmt", help="(onnx)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output file or folder (default: <models>/extractor.onnx or extractor.pt)",
    )
    parser.add_argument(
        "--models", type=Path, default=Path("models"), help="extractor folder (models)"
    )
    parser.add_argument(
        "--dynamo",
        action="store_true",
        help="ONNX: use the torch.export-based exporter (needs onnxscript)",
    )
    parser.add_argument(
        "--reranker",
        action="store_true",
        help="export the pairwise re-ranker (<models>/reranker/) as ONNX instead",
    )
    parser.add_argument(
        "--thresholds",
        type=Path,
        default=None,
        help="verification thresholds to embed (default: reports/thresholds.json beside "
        "<models>, when it exists)",
    )
    parser.add_argument(
        "--no-thresholds", action="store_true", help="embed no verification thresholds"
    )


def _run_export(args: argparse.Namespace) -> int:
    from embedlab.models.export import export_extractor, export_reranker

    if args.reranker:
        if args.fmt != "onnx":
            raise EmbedlabError("export --reranker: only --format onnx is supported")
        path = export_reranker(args.models, args.out)
        sys.stdout.write(f"exported onnx re-ranker to {path}\n")
        return 0
    from embedlab.models.export import exported_thresholds

    path = export_extractor(
        args.models,
        args.fmt,
        args.out,
        dynamo=args.dynamo,
        thresholds=args.thresholds,
        with_thresholds=not args.no_thresholds,
    )
    chosen = exported_thresholds(path)
    carried = (
        "no thresholds"
        if chosen is None
        else "thresholds at " + ", ".join(f"fmr={r:g}" for r in chosen.rates)
    )
    sys.stdout.write(f"exported {args.fmt} extractor to {path} ({carried})\n")
    return 0


# ---------------------------------------------------------------------------- compare
def _compare_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "runs",
        nargs="*",
        metavar="RUN",
        help="DVC experiment names, git revisions or folders holding reports/ (A B [more...]); "
        "a group of seeds with commas: exp-a1,exp-a2,exp-a3",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default: reports/compare/<A>_vs_<B>/, or .../leaderboard/)",
    )
    parser.add_argument(
        "--all",
        action="store_true",
        dest="all_runs",
        help="leaderboard of every experiment, runs differing only in seed grouped",
    )
    parser.add_argument(
        "--sort", default="cmc@1", metavar="METRIC", help="leaderboard order (cmc@1)"
    )
    parser.add_argument("--seed", type=at_least(0), default=0, help="bootstrap and test seed (0)")
    parser.add_argument(
        "--n-resamples",
        "--resamples",
        dest="resamples",
        type=at_least(100),
        default=10_000,
        help="bootstrap/permutation resamples (10000)",
    )
    parser.add_argument(
        "--top-k", type=at_least(1), default=5, help="gallery items drawn per query (5)"
    )
    parser.add_argument(
        "--max-queries",
        type=at_least(0),
        default=50,
        help="fixed and broken queries drawn, each (50)",
    )
    parser.add_argument(
        "--no-trackers", action="store_true", help="do not log the result to run B's trackers"
    )


def _run_compare(args: argparse.Namespace) -> int:
    from embedlab.compare import CompareOptions, run_compare

    options = CompareOptions(
        seed=args.seed,
        n_resamples=args.resamples,
        top_k=args.top_k,
        max_queries=args.max_queries,
    )
    run_compare(
        args.runs,
        args.out,
        all_runs=args.all_runs,
        sort=args.sort,
        options=options,
        trackers=not args.no_trackers,
    )
    return 0


# ----------------------------------------------------------------------- convert-weights
def _convert_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", type=Path, help="the weights file to convert (.pth/.safetensors)")
    parser.add_argument("dst", type=Path, help="the .safetensors file to write")
    parser.add_argument(
        "--arch", required=True, help="the timm architecture the tensors map onto, in order"
    )


def _run_convert(args: argparse.Namespace) -> int:
    from embedlab.models.convert import convert_weights

    path = convert_weights(args.src, args.dst, args.arch)
    sys.stdout.write(f"wrote {args.arch} weights to {path} (use it as train.model.weights)\n")
    return 0


# ---------------------------------------------------------------------------- sync
def _sync_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--status", action="store_true", help="only list what is pending, per backend and run"
    )
    parser.add_argument(
        "--params", type=Path, default=Path("params.yaml"), help="tracker settings (params.yaml)"
    )


def _run_sync(args: argparse.Namespace) -> int:
    """Send what the stages left in ``logs/spool``; exit 1 while something stays unsent."""
    from embedlab.config import load_params
    from embedlab.tracking import store_root
    from embedlab.tracking.spool import SPOOL_DIR
    from embedlab.tracking.sync import pending_entries, sync_spool

    if not args.params.is_file():  # defaults could send records to a store nobody meant
        raise EmbedlabError(
            f"{args.params}: file not found: sync reads the tracker stores from it "
            "(run it in the repo root, or pass --params)"
        )
    params = load_params(args.params)
    root = store_root(params, Path("."))
    entries = pending_entries(root)
    if not entries:
        sys.stdout.write(f"nothing to sync: no unsent tracker records in {SPOOL_DIR}/\n")
        return 0
    if args.status:
        sys.stdout.write("backend      run                               pending  kinds\n")
        for entry in entries:
            kinds = ", ".join(f"{k} {n}" for k, n in sorted(entry.kinds.items()))
            run = entry.run_id or f"(not created yet: {entry.folder.name})"
            busy = "  [in use by a running stage]" if entry.busy else ""
            sys.stdout.write(f"{entry.backend:<12} {run:<33} {entry.pending:>7}  {kinds}{busy}\n")
        return 0
    left = 0
    for result in sync_spool(params, root):
        run = result.run_id or result.folder.name
        line = f"{result.backend} run {run}: sent {result.sent} records"
        if result.rejected:
            line += f", {result.rejected} refused (see {result.folder}/rejected.jsonl)"
        if result.left:
            line += f"; {result.left} still pending ({result.error})"
        sys.stdout.write(line + "\n")
        left += result.left
    return 1 if left else 0


COMMANDS: dict[str, Command] = {
    "search": Command("search the embeddings with images", _search_arguments, _run_search),
    "export": Command(
        "export the extractor for serving (ONNX, TorchScript)", _export_arguments, _run_export
    ),
    "compare": Command(
        "compare runs query by query (intervals, fixed/broken queries, HTML page)",
        _compare_arguments,
        _run_compare,
    ),
    "sync": Command(
        "send tracker records the stages left unsent (logs/spool) into their runs",
        _sync_arguments,
        _run_sync,
    ),
    "convert-weights": Command(
        "map a foreign weights file onto a timm architecture (for train.model.weights)",
        _convert_arguments,
        _run_convert,
    ),
}
"""Subcommands by name; a new one is one more entry."""


def build_parser() -> argparse.ArgumentParser:
    """The ``embedlab`` parser with one subparser per :data:`COMMANDS` entry.

    Example:
        >>> args = build_parser().parse_args(["search", "q.png", "--top-k", "3"])
        >>> args.command, args.paths, args.top_k, args.gallery
        ('search', ['q.png'], 3, 'all')
    """
    parser = _Parser(
        prog="embedlab",
        description="Search embeddings, export extractors (docs/search.md), compare runs "
        "(docs/compare-runs.md), sync trackers (docs/trackers.md).",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in COMMANDS.items():
        sub = subparsers.add_parser(name, help=command.help, description=command.help)
        command.add_arguments(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``embedlab`` console script; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or an argument error already printed in one line
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return COMMANDS[args.command].run(args)
    except EmbedlabError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
