"""Verification thresholds on held-out queries: choose on one half, measure on the other.

Usage::

    python tests/benchmarks/threshold_holdout.py [--embeddings data/embeddings]
        [--rates 0.001 0.01] [--seed 0] [--no-baseline]

The validate stage chooses each threshold on all validation pairs (``reports/thresholds.json``)
and reports the FMR and FNMR it gives *there*. Whether a threshold holds on queries it was
not chosen on is measured here, on the embed stage's store: the validation images are
split in two halves by ``--seed``; on half A, its queries against its gallery, each rate's
threshold is chosen exactly as validate does (largest distance ``t`` whose share of
negative pairs with distance ``< t`` is at most the rate); it is then applied, unchanged, to
half B's queries against half B's gallery, and the FMR and FNMR it gives there are
printed. No image, and so no pair, is used both to choose and to measure. Then the halves
swap roles. The baseline, computed the same way in the same run: raw pixels as the
embeddings (the raw-pixel kNN every report carries), which shows what the model adds at
the same false match rate.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from embedlab.data.datasets import load_image
from embedlab.embedding.store import read_store
from embedlab.metrics.baseline import raw_pixel_matrix
from embedlab.metrics.verification import choose_thresholds_chunked, rates_at_threshold_chunked
from embedlab.retrieval.query_gallery import factorize


@dataclass
class Half:
    """One half of the validation images: its queries and its gallery."""

    queries: np.ndarray  # row positions of the store
    gallery: np.ndarray


def halves(items: pd.DataFrame, seed: int) -> tuple[Half, Half]:
    """The validation rows split in two by a seeded permutation; roles kept per row."""
    rows = np.flatnonzero((items["split"] == "validation").to_numpy())
    order = np.random.default_rng(seed).permutation(rows)
    out = []
    for part in (np.sort(order[: len(order) // 2]), np.sort(order[len(order) // 2 :])):
        is_query = items["is_query"].to_numpy(bool)[part] if "is_query" in items else True
        is_gallery = items["is_gallery"].to_numpy(bool)[part] if "is_gallery" in items else True
        out.append(Half(part[np.asarray(is_query)], part[np.asarray(is_gallery)]))
    return out[0], out[1]


def pair_args(
    embeddings: torch.Tensor, labels: torch.Tensor, sequence: torch.Tensor, half: Half
) -> tuple[tuple, dict]:
    """The positional and keyword arguments of the chunked pair functions for a half."""
    q, g = torch.from_numpy(half.queries), torch.from_numpy(half.gallery)
    positional = (embeddings[q], embeddings[g], labels[q], labels[g])
    keywords = {
        "query_ids": q,
        "gallery_ids": g,
        "query_sequence": sequence[q],
        "gallery_sequence": sequence[g],
    }
    return positional, keywords


def holdout(
    name: str,
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    sequence: torch.Tensor,
    parts: tuple[Half, Half],
    rates: list[float],
    metric: str,
) -> None:
    """Print each rate's threshold chosen on one half and its rates on both halves."""
    for label, (choose, measure) in (("A->B", parts), ("B->A", parts[::-1])):
        args, keywords = pair_args(embeddings, labels, sequence, choose)
        held_args, held_keywords = pair_args(embeddings, labels, sequence, measure)
        choice = choose_thresholds_chunked(*args, rates, metric=metric, **keywords)
        for chosen in choice.entries:
            held = rates_at_threshold_chunked(
                *held_args, chosen.threshold, metric=metric, **held_keywords
            )
            print(
                f"{name:<11} {label}  fmr target {chosen.fmr_target:<6g} threshold "
                f"{chosen.threshold:.4f}  chosen half: fmr {chosen.fmr:.5f} fnmr "
                f"{chosen.fnmr:.4f}  held-out half: fmr {held['fmr']:.5f} fnmr "
                f"{held['fnmr']:.4f}  ({held['n_positive']:,} positive, "
                f"{held['n_negative']:,} negative pairs)",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embeddings", default="data/embeddings")
    parser.add_argument("--rates", type=float, nargs="+", default=[0.001, 0.01])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-baseline", action="store_true")
    args = parser.parse_args()

    store = read_store(args.embeddings)
    items = store.items
    metric = store.info.metric
    labels = torch.tensor(items["label"].to_numpy(np.int64))
    if "sequence" in items:
        codes, names = factorize(items["sequence"].fillna("").astype(str).tolist())
        empty = names.index("") if "" in names else -1
        sequence = torch.where(codes == empty, -1, codes) if empty >= 0 else codes
    else:
        sequence = torch.full((len(items),), -1, dtype=torch.int64)
    parts = halves(items, args.seed)
    print(
        f"{args.embeddings}: {store.info.extractor.get('arch', '?')}, {metric} distance; "
        f"validation halves by seed {args.seed}: A {len(parts[0].queries)} queries x "
        f"{len(parts[0].gallery)} gallery, B {len(parts[1].queries)} x {len(parts[1].gallery)}"
    )
    started = time.perf_counter()
    embeddings = torch.from_numpy(np.array(store.embeddings(), dtype=np.float32))
    holdout("model", embeddings, labels, sequence, parts, args.rates, metric)
    if not args.no_baseline:
        rows = np.concatenate([parts[0].queries, parts[0].gallery, parts[1].queries,
                               parts[1].gallery])  # fmt: skip
        needed = np.unique(rows)
        root = store.info.dataset_root
        images = [load_image(f"{root}/{items['path'].iloc[i]}") for i in needed]
        pixels, _ = raw_pixel_matrix(images)
        raw = torch.zeros((len(items), pixels.shape[1]), dtype=torch.float32)
        raw[torch.from_numpy(needed)] = torch.from_numpy(pixels)
        holdout("raw pixels", raw, labels, sequence, parts, args.rates, metric)
    print(f"{time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
