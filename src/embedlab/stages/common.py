"""Pieces shared by the stages: fixed paths, the metric builder, the embedding pass."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from torch.utils.data import DataLoader, Dataset

from embedlab.data.datasets import worker_threads_init
from embedlab.errors import EmbedlabError

if TYPE_CHECKING:
    from embedlab.config import ValidateParams
    from embedlab.metrics import EmbeddingMetrics

log = logging.getLogger("embedlab")

# Fixed output paths (relative to the repo root), as declared in dvc.yaml.
PREPARED_DIR = Path("data") / "prepared"
MANIFEST = PREPARED_DIR / "manifest.csv"
MODELS_DIR = Path("models")
CHECKPOINTS_DIR = MODELS_DIR / "checkpoints"
REPORTS_DIR = Path("reports")
TRAIN_REPORT = REPORTS_DIR / "train.json"
METRICS_REPORT = REPORTS_DIR / "metrics.json"
PER_QUERY_REPORT = REPORTS_DIR / "per_query.csv"
IMAGES_DIR = REPORTS_DIR / "images"
EMBEDDINGS_DIR = Path("data") / "embeddings"


def build_metric(
    cfg: ValidateParams, extra_keys: tuple[str, ...] = ("paths",), verbose: bool = False
) -> EmbeddingMetrics:
    """An :class:`EmbeddingMetrics` configured from ``validate.*`` (verbose: timings, kNN bar)."""
    from embedlab.metrics import EmbeddingMetrics

    return EmbeddingMetrics(
        extra_keys=extra_keys,
        cmc_top_k=tuple(cfg.cmc_top_k),
        precision_top_k=tuple(cfg.precision_top_k),
        map_top_k=tuple(cfg.map_top_k),
        pcf_variance=tuple(cfg.pcf_variance),
        distance=cfg.distance,
        verbose=verbose,
    )


def image_options(cfg: ValidateParams, val_df: pd.DataFrame) -> dict[str, Any]:
    """Keyword arguments of ``render_validation_images`` from ``validate.images``.

    ``validate.images.query_ids`` are manifest row ids (``val_df``'s index); the grid
    wants query numbers (positions among the validation queries, in manifest order).
    """
    images = cfg.images
    options: dict[str, Any] = {
        "n_queries": images.n_queries,
        "n_worst": images.n_worst,
        "worst_by": images.worst_by,
        "top_k": images.top_k,
    }
    if images.query_ids:
        query_rows = list(val_df.index[val_df["is_query"].to_numpy(dtype=bool)])
        number = {row: i for i, row in enumerate(query_rows)}
        unknown = [r for r in images.query_ids if r not in number]
        if unknown:
            raise EmbedlabError(
                f"params.yaml: validate.images.query_ids: {unknown[:10]} are not validation "
                "queries (ids are manifest row numbers, counting from 0)"
            )
        options["queries"] = [number[r] for r in images.query_ids]
    return options


def make_loader(dataset: Dataset, batch_size: int, num_workers: int, **kwargs: Any) -> DataLoader:
    """A DataLoader that decodes images in worker processes when ``num_workers > 0``."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        worker_init_fn=worker_threads_init if num_workers > 0 else None,
        **kwargs,
    )
