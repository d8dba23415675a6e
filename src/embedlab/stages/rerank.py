"""rerank: train the pairwise re-ranker on pairs mined from the extractor's train neighbours.

With ``rerank.enabled`` it embeds the manifest's ``rerank`` split (train-side images the
extractor never trained on, :func:`pair_source`), or the train split when there is none,
with the trained extractor, mines
every positive among each item's ``top_n`` neighbours (never of its own sequence) and
its ``hard_negatives`` nearest negatives
(:func:`~embedlab.miners.neighbour_pairs.mine_neighbour_pairs`), trains a pairwise model
of kind ``rerank.head`` (:func:`~embedlab.models.pairwise.build_pairwise_model`, backbone
initialised from the extractor; with ``rerank.augment`` on augmented images) with a
binary cross-entropy, logs ``rerank/loss`` and ``rerank/pair_accuracy`` into the run's
trackers, and writes ``models/reranker/`` (weights, config and the extractor's sha256)
and ``reports/rerank.json``. Validation items are never read.
Without it, the stage writes a note that validate reads as "no re-ranker".
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from embedlab.config import Params
from embedlab.data.datasets import DatasetWithLabels
from embedlab.data.manifest import load_manifest
from embedlab.data.transforms import eval_transform, train_transform
from embedlab.embedding.inference import embed_dataset
from embedlab.embedding.reranker import dataset_images
from embedlab.embedding.reranker_training import EpochStats, PairwiseTraining, fit_pairwise
from embedlab.errors import EmbedlabError
from embedlab.io import file_sha256, write_json
from embedlab.miners.neighbour_pairs import mine_neighbour_pairs
from embedlab.models import load_extractor
from embedlab.models.extractor import EXTRACTOR_WEIGHTS
from embedlab.models.pairwise import build_pairwise_model, save_reranker, write_disabled_reranker
from embedlab.retrieval.query_gallery import sequence_codes
from embedlab.stages.common import MANIFEST, MODELS_DIR, RERANK_REPORT, RERANKER_DIR, log
from embedlab.tracking import open_trackers


def pair_source(splits: pd.Series) -> str:
    """The split the re-ranker's pairs are mined from: ``rerank`` when the manifest has
    such rows, else ``train``.

    Pairs mined among the extractor's own training images are easier than the extractor's
    mistakes on new images; images it never saw give pairs like those it meets at search.

    >>> pair_source(pd.Series(["train", "validation", "rerank"])), pair_source(pd.Series(["train"]))
    ('rerank', 'train')
    """
    return "rerank" if bool((splits == "rerank").any()) else "train"


def training_settings(params: Params) -> PairwiseTraining:
    """:class:`PairwiseTraining` from ``rerank.*`` (seeded by the run's ``seed``).

    >>> training_settings(Params(seed=3)).seed, training_settings(Params()).epochs
    (3, 2)
    """
    cfg = params.rerank
    return PairwiseTraining(
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        head_lr=cfg.head_lr,
        freeze_backbone=cfg.freeze_backbone,
        seed=params.seed,
    )


def run_rerank(params: Params, root: Path = Path(".")) -> dict[str, Any]:
    """Train and write ``models/reranker/`` and ``reports/rerank.json``; return the report."""
    cfg = params.rerank
    out_dir = root / RERANKER_DIR
    if not cfg.enabled:
        write_disabled_reranker(out_dir)
        report: dict[str, Any] = {"enabled": False}
        write_json(root / RERANK_REPORT, report)
        log.info("rerank: rerank.enabled is false; no re-ranker trained")
        return report
    torch.manual_seed(params.seed)
    started = time.perf_counter()
    manifest = load_manifest(root / MANIFEST, image_check="exists")
    extractor = load_extractor(root / MODELS_DIR)
    sha256 = file_sha256(root / MODELS_DIR / EXTRACTOR_WEIGHTS)
    split = pair_source(manifest.df["split"])
    rows = manifest.split(split)  # never the validation items
    if len(rows) < 2:
        raise EmbedlabError(f"{root / MANIFEST}: the {split} split has {len(rows)} rows, need 2")
    dataset = DatasetWithLabels(
        rows, manifest.dataset_root, eval_transform(extractor.preprocessing)
    )
    embeddings = embed_dataset(extractor, dataset, params.validate.batch_size)
    assert embeddings is not None  # one process
    pairs = mine_neighbour_pairs(
        torch.from_numpy(embeddings),
        torch.tensor(dataset.labels),
        cfg.top_n,
        cfg.hard_negatives,
        metric=params.validate.distance,
        sequence=sequence_codes(
            rows["sequence"].fillna("").tolist() if "sequence" in rows else None, len(rows)
        ),
    )
    mined = len(pairs)
    pairs = pairs.sample(cfg.max_pairs, params.seed)
    n_different = int(pairs.different.sum())
    log.info(
        "rerank: %d pairs mined from %d %s items, %d kept (%d same, %d different)",
        mined, len(rows), split, len(pairs), len(pairs) - n_different, n_different,
    )  # fmt: skip
    model = build_pairwise_model(extractor, cfg.head, cfg.hidden)
    model.distance_weight = cfg.distance_weight
    images = dataset_images(
        DatasetWithLabels(
            rows,
            manifest.dataset_root,
            train_transform(extractor.preprocessing, params.train.augment),
        )
        if cfg.augment
        else dataset
    )
    hub = open_trackers(params, root, stage="rerank", resume=True)
    try:

        def on_epoch(stats: EpochStats) -> None:
            values = {"rerank/loss": stats.loss, "rerank/pair_accuracy": stats.pair_accuracy}
            hub.log_metrics(values, step=stats.step)
            log.info("rerank: epoch %d loss %.4f pair accuracy %.4f", stats.epoch, *values.values())

        history = fit_pairwise(model, images, pairs, training_settings(params), on_epoch)
        seconds = round(time.perf_counter() - started, 2)
        report = {
            "enabled": True,
            "pairs_from": split,
            "pairs_mined": mined,
            "pairs": len(pairs),
            "pairs_different": n_different,
            "steps": history[-1].step,
            "final_loss": round(history[-1].loss, 6),
            "pair_accuracy": round(history[-1].pair_accuracy, 6),
            "train_seconds": seconds,
        }
        weights, _ = save_reranker(model, out_dir, sha256, top_n=cfg.top_n, report=report)
        write_json(root / RERANK_REPORT, report)
        numbers = {k: v for k, v in report.items() if k not in ("enabled", "pairs_from")}
        hub.log_summary({f"rerank/{k}": float(v) for k, v in numbers.items()})
        hub.log_artifact(weights)
    finally:
        hub.finish()
    log.info("rerank: trained in %.1f s", seconds)
    return report
