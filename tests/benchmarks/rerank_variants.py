"""Which re-ranker configuration gains on the default data: plain vs re-ranked, with intervals.

Reads the workspace's trained extractor (``models/``) and ``data/prepared``, embeds the
train and validation splits once, then for each variant (``key=value,...`` over the
``rerank.*`` params) mines the train pairs, trains a pairwise model from the extractor
and re-ranks the validation queries exactly as validate does. For each variant and each
``--distance-weights`` value it prints plain and re-ranked cmc@1 and map@R, the paired
bootstrap 95% interval of the cmc@1 delta (the one `embedlab compare` gives for two
single runs) and the seconds spent. The plain row is the baseline of the same run.

Usage::

    OMP_NUM_THREADS=1 python -m tests.benchmarks.rerank_variants \\
        "head=features" "head=stacked" "head=features,max_pairs=20000,augment=true" \\
        --distance-weights 0 0.5
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from embedlab.compare.stats import bootstrap_ci
from embedlab.config import AugmentParams, RerankParams
from embedlab.data.datasets import DatasetQueryGallery, DatasetWithLabels
from embedlab.data.manifest import load_manifest
from embedlab.data.transforms import eval_transform, train_transform
from embedlab.embedding.inference import embed_dataset
from embedlab.embedding.reranker import PairwiseReranker, dataset_images
from embedlab.embedding.reranker_training import PairwiseTraining, fit_pairwise
from embedlab.metrics.scoring import MetricOptions, per_query_metrics
from embedlab.miners.neighbour_pairs import mine_neighbour_pairs
from embedlab.models import load_extractor
from embedlab.models.pairwise import build_pairwise_model
from embedlab.retrieval import QueryGallery, retrieve

OPTIONS = MetricOptions(cmc_top_k=(1,), precision_top_k=(), map_top_k=(), r_metrics=True)


def parse_variant(text: str) -> RerankParams:
    """``"head=stacked,max_pairs=20000"`` -> ``rerank`` params with those set (enabled)."""
    changes = dict(part.split("=", 1) for part in text.split(",") if part)
    return RerankParams.model_validate({"enabled": True, **changes})


def cached(view: DatasetWithLabels) -> torch.Tensor:
    """Every preprocessed image of a dataset, in one tensor (read from disk once)."""
    load = dataset_images(view)
    return torch.cat([load(chunk) for chunk in torch.arange(len(view)).split(512)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="+", help="key=value,... over rerank.* params")
    parser.add_argument("--root", type=Path, default=Path("."))
    parser.add_argument("--distance-weights", type=float, nargs="+", default=[0.0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    root = args.root
    manifest = load_manifest(root / "data/prepared/manifest.csv", image_check="exists")
    extractor = load_extractor(root / "models")
    pre = extractor.preprocessing
    train = DatasetWithLabels(manifest.split("train"), manifest.dataset_root, eval_transform(pre))
    val = DatasetQueryGallery(
        manifest.split("validation"), manifest.dataset_root, eval_transform(pre)
    )
    started = time.perf_counter()
    train_pixels, val_pixels = cached(train), cached(val)
    train_emb = torch.from_numpy(embed_dataset(extractor, train, 256))
    val_emb = embed_dataset(extractor, val, 256)
    qg = QueryGallery.from_columns(
        val_emb, val.labels, is_query=val.is_query, is_gallery=val.is_gallery,
        sequence=val.sequence.tolist(),
    )  # fmt: skip
    plain = retrieve(qg, 21, at_least_r=True)
    base = per_query_metrics(plain, OPTIONS)
    print(
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} thread(s), "
        f"load {os.getloadavg()[0]:.2f}; embedded {len(train)} train + {len(val)} validation "
        f"in {time.perf_counter() - started:.1f} s; plain cmc@1 {base['cmc'][1].mean():.4f} "
        f"map@R {base['map@R'].mean():.4f}",
        flush=True,
    )
    labels = torch.tensor(train.labels)
    for text in args.variants:
        cfg = parse_variant(text)
        started = time.perf_counter()
        torch.manual_seed(args.seed)
        pairs = mine_neighbour_pairs(train_emb, labels, cfg.top_n, cfg.hard_negatives)
        mined = len(pairs)
        pairs = pairs.sample(cfg.max_pairs, args.seed)
        model = build_pairwise_model(extractor, cfg.head, cfg.hidden)
        images = (lambda p: train_pixels[p]) if not cfg.augment else augmented(train, pre)
        settings = PairwiseTraining(
            cfg.epochs, cfg.batch_size, cfg.lr, cfg.head_lr, cfg.freeze_backbone, args.seed
        )
        history = fit_pairwise(model, images, pairs, settings)
        trained = time.perf_counter() - started
        for weight in args.distance_weights:
            started = time.perf_counter()
            reranker = PairwiseReranker(
                model, lambda p: val_pixels[p], top_n=cfg.top_n, distance_weight=weight
            )
            after = per_query_metrics(reranker(plain), OPTIONS)
            delta = (after["cmc"][1] - base["cmc"][1]).numpy()
            lo, hi = bootstrap_ci(delta, seed=0)[0]
            print(
                f"{text} w={weight}: pairs {len(pairs)}/{mined} "
                f"({int(pairs.different.sum())} different), loss {history[-1].loss:.4f} "
                f"acc {history[-1].pair_accuracy:.4f}; cmc@1 {base['cmc'][1].mean():.4f} -> "
                f"{after['cmc'][1].mean():.4f} ({np.mean(delta):+.4f} [{lo:+.4f}, {hi:+.4f}])"
                f" map@R {base['map@R'].mean():.4f} -> {after['map@R'].mean():.4f}; train "
                f"{trained:.1f} s, re-rank {time.perf_counter() - started:.1f} s, "
                f"load {os.getloadavg()[0]:.2f}",
                flush=True,
            )


def augmented(train: DatasetWithLabels, pre: dict) -> object:
    """Images of train positions through the training augmentation (fresh each call)."""
    view = DatasetWithLabels(train.df, train.dataset_root, train_transform(pre, AugmentParams()))
    return dataset_images(view)


if __name__ == "__main__":
    main()
