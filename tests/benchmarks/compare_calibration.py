"""How often the seed-aware test and the query-only test reject on simulated null
comparisons, and how often the seed-aware test finds a given shift.

Usage::

    python -m tests.benchmarks.compare_calibration --n-null 1000 --n-power 200

The simulation is the unit tests' (``tests/compare_helpers.simulate_groups``): two
configurations of 3 seeds on 300 queries, run-level noise (sd 0.006 of a run's mean)
large next to the query noise. A calibrated 5% test rejects about 5% of null comparisons.
The power check shifts B by ``--shift`` with the seed spreads ``--run-sd`` (default: the
real 5-epoch triplet and ArcFace runs in map@R).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from tests.compare_helpers import query_only_rejects, seed_aware_p, simulate_groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-null", type=int, default=1000)
    parser.add_argument("--n-power", type=int, default=200)
    parser.add_argument("--shift", type=float, default=0.029)
    parser.add_argument(
        "--run-sd",
        type=float,
        nargs=2,
        default=(0.012, 0.0066),
        help="spread of run means of A and B in the power check (the triplet loss and ArcFace)",
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--n-resamples", type=int, default=400)
    args = parser.parse_args()
    rng = np.random.default_rng(2026)
    k, r = args.seeds, args.n_resamples
    start = time.perf_counter()
    seed_aware = query_only = 0
    for i in range(args.n_null):
        runs = simulate_groups(rng, k, 0.0)
        seed_aware += seed_aware_p(runs, k, i, r) < 0.05
        query_only += query_only_rejects(runs, k, i, r)
    found = sum(
        seed_aware_p(simulate_groups(rng, k, args.shift, tuple(args.run_sd)), k, i, r) < 0.05
        for i in range(args.n_power)
    )
    seconds = time.perf_counter() - start
    n_null, n_power = max(args.n_null, 1), max(args.n_power, 1)
    print(f"{args.n_null} null comparisons, {k} vs {k} seeds, {r} resamples:")
    print(f"  seed-aware test rejects at 5%: {seed_aware / n_null:.1%}")
    print(f"  query-only test rejects at 5%: {query_only / n_null:.1%}")
    print(
        f"shift {args.shift}, run sd {args.run_sd[0]} vs {args.run_sd[1]}: found by the "
        f"seed-aware test in {found / n_power:.1%} of {args.n_power}"
    )
    print(f"{seconds:.1f} s")


if __name__ == "__main__":
    main()
