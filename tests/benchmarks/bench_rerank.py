"""Added time per query of the pairwise re-ranker at N=5 and N=20, beside the plain search.

Reads the workspace's trained extractor (``models/``), its re-ranker (``models/reranker/``;
when none was trained or with ``--head``, an untrained one of that head: the time does
not depend on the weights) and the validation split of ``data/prepared``. In one run it measures:

- plain: embedding every validation image with the extractor and the exact kNN search
  of every query (what validate does), per query;
- re-ranked at N: what :class:`~embedlab.embedding.reranker.PairwiseReranker` adds on
  top (loading the images again, the re-ranker's backbone on the queries and their
  candidates, the head on the N pairs; ``stacked``: the backbone on each of the N pairs,
  in both orders), per query.

Usage::

    OMP_NUM_THREADS=1 python tests/benchmarks/bench_rerank.py [--queries 1000] [--n 5 20]
        [--head features|stacked]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch

from embedlab.data.datasets import DatasetQueryGallery
from embedlab.data.manifest import load_manifest
from embedlab.data.transforms import eval_transform
from embedlab.embedding.inference import embed_dataset
from embedlab.embedding.reranker import PairwiseReranker, dataset_images
from embedlab.io import file_sha256
from embedlab.models import load_extractor
from embedlab.models.pairwise import PAIR_HEADS, build_pairwise_model, load_reranker
from embedlab.retrieval import QueryGallery, retrieve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("."))
    parser.add_argument("--queries", type=int, default=1000, help="validation items used")
    parser.add_argument("--n", type=int, nargs="+", default=[5, 20])
    parser.add_argument(
        "--head", choices=PAIR_HEADS, help="time an untrained re-ranker of this head instead"
    )
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    root = args.root
    manifest = load_manifest(root / "data/prepared/manifest.csv", image_check="exists")
    extractor = load_extractor(root / "models")
    rows = manifest.split("validation").iloc[: args.queries]
    dataset = DatasetQueryGallery(
        rows, manifest.dataset_root, eval_transform(extractor.preprocessing)
    )
    sha = file_sha256(root / "models/extractor.safetensors")
    model = (
        load_reranker(root / "models/reranker", sha)
        if (root / "models/reranker").exists() and args.head is None
        else None
    )
    trained = model is not None
    model = model or build_pairwise_model(extractor, args.head or "features", 128).eval()
    state = "trained" if trained else "untrained (same cost)"
    print(f"{platform.processor() or platform.machine()}, threads {torch.get_num_threads()}, "
          f"load {os.getloadavg()[0]:.1f}; {len(rows)} validation items, each a query; "
          f"{model.head_kind} re-ranker, {state}")  # fmt: skip

    started = time.perf_counter()
    embeddings = embed_dataset(extractor, dataset, batch_size=256)
    qg = QueryGallery.from_columns(embeddings, dataset.labels)
    results = retrieve(qg, k=max(args.n) + 1)
    plain = (time.perf_counter() - started) / len(qg)
    print(f"plain (embed + exact kNN): {plain * 1e3:.3f} ms per query")
    for n in args.n:
        reranker = PairwiseReranker(model, dataset_images(dataset), top_n=n, batch_size=256)
        started = time.perf_counter()
        reranker(results)
        added = (time.perf_counter() - started) / len(qg)
        ratio = (plain + added) / plain
        print(f"re-rank N={n:>2}: +{added * 1e3:.3f} ms per query ({ratio:.2f}x plain)")


if __name__ == "__main__":
    main()
