"""Search latency over a synthetic 1,000,000 x 384 gallery: exact and FAISS, build time too.

The gallery is clustered like real embeddings (2,000 centres + noise, L2-normalised,
float32: 1.5 GB); queries are noisy copies of random gallery rows. Indexes are built
and dropped one at a time so that at most two copies of the gallery live at once.
Reported per index: build time, latency of 1 query (median of 5) and of 1,000 queries,
agreement with the exact top-k, and the peak resident memory so far.

Usage::

    .venv/bin/python tests/benchmarks/bench_search.py [--rows 1000000] [--dim 384] [--k 10]
        [--queries 1000] [--nlist 1024] [--nprobe 16]
"""

from __future__ import annotations

import argparse
import functools
import gc
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
import torch

from embedlab.retrieval.index import ExactIndex, FaissIndex

print = functools.partial(print, flush=True)  # partial results survive a long run


def synthetic_gallery(rows: int, dim: int, seed: int = 0, chunk: int = 100_000) -> np.ndarray:
    """Clustered, L2-normalised float32 rows, generated in chunks (no float64 temporaries)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((2000, dim), dtype=np.float32)
    out = np.empty((rows, dim), dtype=np.float32)
    for start in range(0, rows, chunk):
        stop = min(start + chunk, rows)
        block = centres[rng.integers(0, len(centres), stop - start)]
        block += 0.6 * rng.standard_normal((stop - start, dim), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start:stop] = block
    return out


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB on Linux


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--nlist", type=int, default=1024)
    parser.add_argument("--nprobe", type=int, default=16)
    args = parser.parse_args()

    seconds, gallery = timed(lambda: synthetic_gallery(args.rows, args.dim))
    assert isinstance(gallery, np.ndarray)
    rng = np.random.default_rng(1)
    queries = gallery[rng.integers(0, args.rows, args.queries)].copy()
    queries += 0.05 * rng.standard_normal(queries.shape, dtype=np.float32)
    import faiss

    print(
        f"search benchmark: gallery {args.rows:,} x {args.dim} float32 "
        f"({gallery.nbytes / 2**30:.2f} GiB, generated in {seconds:.1f} s), k={args.k}, "
        f"cpus={os.cpu_count()}, torch threads={torch.get_num_threads()}, "
        f"faiss threads={faiss.omp_get_max_threads()}"
    )
    batch = f"{args.queries} q s"
    header = f"  {'index':<26} {'build s':>8} {'1 query ms':>11} {batch:>9} {'q/s':>8}"
    print(header + f" {'same top-k':>11} {'peak RSS GiB':>13}")

    exact_ids: np.ndarray | None = None
    builders: list[tuple[str, Callable[[], object]]] = [
        ("ExactIndex (chunked knn)", lambda: ExactIndex(gallery)),
        ("FaissIndex Flat (exact)", lambda: FaissIndex(gallery, factory="Flat")),
        (
            f"FaissIndex IVF{args.nlist} p{args.nprobe}",
            lambda: FaissIndex(gallery, factory=f"IVF{args.nlist},Flat", nprobe=args.nprobe),
        ),
    ]
    for name, build in builders:
        build_s, index = timed(build)
        assert isinstance(index, ExactIndex | FaissIndex)
        index.search(queries[:1], args.k)  # warm-up
        singles = []
        for i in range(5):
            started = time.perf_counter()
            index.search(queries[i : i + 1], args.k)
            singles.append(time.perf_counter() - started)
        started = time.perf_counter()
        _, ids = index.search(queries, args.k)
        batch_s = time.perf_counter() - started
        if exact_ids is None:
            exact_ids = ids
        # Share of the exact top-k found (recall@k against ExactIndex).
        agreement = np.mean(
            [len(set(a) & set(b)) / args.k for a, b in zip(ids, exact_ids, strict=True)]
        )
        print(
            f"  {name:<26} {build_s:>8.2f} {1000 * statistics.median(singles):>11.1f} "
            f"{batch_s:>9.2f} {args.queries / batch_s:>8.0f} {agreement:>11.4f} "
            f"{peak_rss_gb():>13.2f}"
        )
        del index
        gc.collect()
    return 0


if __name__ == "__main__":
    sys.exit(main())
