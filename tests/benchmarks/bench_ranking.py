"""Cost of map@all and mrr: the full-ranking pass against the kNN it follows, in one run.

Usage::

    python tests/benchmarks/bench_ranking.py [--n 3000 20000] [--dim 384] [--repeat 3]

For every N, two data sets of N items (each both query and gallery, labels of 10 items):
``clustered`` (unit-norm label centres plus noise, cmc@1 about 0.9, like a trained model)
and ``random`` (no structure: every query has relevant items far down the ranking, the
worst case of the pass). For each it times ``retrieve(k=5, at_least_r=True)`` (the kNN the
R-metrics already need: the baseline) and the same with ``full_ranking=True`` (the kNN plus
the ranks of every relevant item), keeping the fastest of ``--repeat`` interleaved rounds,
and prints the extra seconds, the ratio and how many queries the pass had to search again.
"""

from __future__ import annotations

import argparse
import time

import torch

from embedlab.retrieval import QueryGallery, retrieve

ITEMS_PER_LABEL = 10
NOISE = 2.2  # as tests/benchmarks/bench_metrics.py: cmc@1 ~0.9


def make_data(n_items: int, dim: int, kind: str, seed: int = 0) -> QueryGallery:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n_items) % max(1, n_items // ITEMS_PER_LABEL)
    if kind == "random":
        return QueryGallery.from_columns(torch.randn(n_items, dim, generator=generator), labels)
    centres = torch.nn.functional.normalize(
        torch.randn(int(labels.max()) + 1, dim, generator=generator), dim=1
    )
    noise = torch.randn(n_items, dim, generator=generator) * (NOISE / dim**0.5)
    return QueryGallery.from_columns(
        torch.nn.functional.normalize(centres[labels] + noise, dim=1), labels
    )


def timed(query_gallery: QueryGallery, full_ranking: bool) -> tuple[float, int]:
    started = time.perf_counter()
    results = retrieve(query_gallery, 5, at_least_r=True, full_ranking=full_ranking)
    seconds = time.perf_counter() - started
    ranks = results.relevant_ranks
    searched = 0 if ranks is None else int((ranks > results.width).any(dim=1).sum())
    return seconds, searched


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[3000, 20_000])
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, dim={args.dim}")
    print(
        f"{'N':>7} {'data':>9} {'kNN s':>7} {'+ranks s':>9} {'extra s':>8} {'ratio':>6}  searched"
    )
    for n_items in args.n:
        for kind in ("clustered", "random"):
            query_gallery = make_data(n_items, args.dim, kind)
            plain, full, searched = float("inf"), float("inf"), 0
            for _ in range(args.repeat):
                plain = min(plain, timed(query_gallery, False)[0])
                seconds, searched = timed(query_gallery, True)
                full = min(full, seconds)
            print(
                f"{n_items:>7} {kind:>9} {plain:>7.2f} {full:>9.2f} {full - plain:>8.2f} "
                f"{full / plain:>5.2f}x  {searched} of {n_items} queries",
                flush=True,
            )


if __name__ == "__main__":
    main()
