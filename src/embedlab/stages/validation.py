"""Validation glue shared by the train and validate stages (not a stage itself).

Both validate through Lightning's validation loop with the loader and the
:class:`~embedlab.lightning.MetricValCallback` built here, so their numbers cannot drift.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from torch.utils.data import DataLoader

from embedlab.config import Params, ProjectorParams, ValidateParams
from embedlab.data.datasets import DatasetQueryGallery, InferenceImages
from embedlab.data.loaders import inference_loader
from embedlab.data.manifest import Manifest
from embedlab.data.transforms import eval_transform
from embedlab.errors import EmbedlabError
from embedlab.lightning import MetricValCallback
from embedlab.metrics import EmbeddingMetrics, MetricTable
from embedlab.tracking.projection import Projection, sample_rows


def build_metric(
    cfg: ValidateParams, extra_keys: tuple[str, ...] = ("paths",), verbose: bool = False
) -> EmbeddingMetrics:
    """An :class:`EmbeddingMetrics` configured from ``validate.*`` (verbose: timings, kNN bar)."""
    return EmbeddingMetrics(
        extra_keys=extra_keys,
        cmc_top_k=tuple(cfg.cmc_top_k),
        precision_top_k=tuple(cfg.precision_top_k),
        map_top_k=tuple(cfg.map_top_k),
        ndcg_top_k=tuple(cfg.ndcg_top_k),
        pcf_variance=tuple(cfg.pcf_variance),
        distance=cfg.distance,
        r_metrics=cfg.r_metrics,
        full_ranking_metrics=cfg.full_ranking_metrics,
        fnmr_fmr=tuple(cfg.fnmr_fmr),
        postprocess=list(cfg.postprocess),
        aqe_k=cfg.aqe_k,
        k1=cfg.k1,
        k2=cfg.k2,
        lambda_value=cfg.lambda_value,
        rerank_top_k=cfg.rerank_top_k,
        verbose=verbose,
    )


def image_options(cfg: ValidateParams, val_df: pd.DataFrame) -> dict[str, Any]:
    """Keyword arguments of ``render_validation_images`` from ``validate.images``.

    ``validate.images.query_ids`` are manifest row ids (``val_df``'s ``row_id``); the
    grid wants query numbers (positions among the validation queries, in manifest order).
    """
    images = cfg.images
    options: dict[str, Any] = {
        "n_queries": images.n_queries,
        "n_worst": images.n_worst,
        "worst_by": images.worst_by,
        "top_k": images.top_k,
    }
    if images.query_ids:
        query_rows = list(val_df["row_id"][val_df["is_query"].to_numpy(dtype=bool)])
        number = {row: i for i, row in enumerate(query_rows)}
        unknown = [r for r in images.query_ids if r not in number]
        if unknown:
            raise EmbedlabError(
                f"params.yaml: validate.images.query_ids: {unknown[:10]} are not validation "
                "queries (ids are manifest row numbers, counting from 0)"
            )
        options["queries"] = [number[r] for r in images.query_ids]
    return options


def validation_setup(
    params: Params,
    manifest: Manifest,
    preprocessing: dict[str, Any],
    *,
    log_images: bool,
    num_workers: int,
    persistent_workers: bool = False,
    on_metrics: Callable[[MetricTable], None] | None = None,
    verbose: bool = False,
) -> tuple[DataLoader, MetricValCallback]:
    """The validation loader and :class:`MetricValCallback` of the manifest's validation split."""
    val_df = manifest.split("validation")
    dataset = DatasetQueryGallery(val_df, manifest.dataset_root, eval_transform(preprocessing))
    images = InferenceImages(dataset)
    loader = inference_loader(
        images, params.validate.batch_size, num_workers, persistent=persistent_workers
    )
    callback = MetricValCallback(
        build_metric(params.validate, verbose=verbose),
        dataset,
        log_images=log_images,
        image_options=image_options(params.validate, val_df),
        on_metrics=on_metrics,
    )
    return loader, callback


def build_projection(
    embeddings: np.ndarray, dataset: DatasetQueryGallery, cfg: ProjectorParams, seed: int
) -> Projection:
    """A sample of at most ``cfg.max_items`` validation items (seeded by ``cfg.seed``, else
    by the run's ``seed``) for the trackers' embedding views: vectors, metadata (row id,
    label, category, role, path, and ``class_name`` when the manifest has it) and
    letterboxed thumbnails of ``cfg.thumbnail_size`` px.

    >>> import tempfile, pathlib
    >>> from PIL import Image
    >>> from embedlab.config import ProjectorParams
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for i in range(3):
    ...     Image.new("RGB", (8, 4), (i, 0, 0)).save(root / f"{i}.png")
    >>> df = pd.DataFrame({"label": [0, 0, 1], "path": ["0.png", "1.png", "2.png"],
    ...                    "row_id": [10, 11, 12], "is_query": [1, 1, 0], "is_gallery": [0, 1, 1]})
    >>> p = build_projection(np.eye(3, dtype=np.float32), DatasetQueryGallery(df, root),
    ...                      ProjectorParams(max_items=3, thumbnail_size=4), seed=0)
    >>> len(p), p.metadata["role"], p.thumbnails.shape
    (3, ['query', 'query+gallery', 'gallery'], (3, 4, 4, 3))
    """
    from PIL import ImageOps

    rows = sample_rows(len(dataset), cfg.max_items, seed if cfg.seed is None else cfg.seed)
    role = np.where(
        dataset.is_query & dataset.is_gallery,
        "query+gallery",
        np.where(dataset.is_query, "query", "gallery"),
    )
    ids = dataset.df["row_id"].to_numpy() if "row_id" in dataset.df else np.arange(len(dataset))
    metadata = {
        "row_id": [str(ids[i]) for i in rows],
        "label": [str(dataset.labels[i]) for i in rows],
        "category": [str(dataset.categories[i]) for i in rows],
        "role": [str(role[i]) for i in rows],
        "path": [str(dataset.paths[i]) for i in rows],
    }
    if "class_name" in dataset.df:  # what people label points by, where the source has it
        names = dataset.df["class_name"].to_numpy()
        metadata["class_name"] = [str(names[i]) for i in rows]
    side = cfg.thumbnail_size
    thumbnails = (
        np.stack([np.asarray(ImageOps.pad(dataset.read_image(int(i)), (side, side))) for i in rows])
        if len(rows)
        else np.zeros((0, side, side, 3), dtype=np.uint8)
    )
    return Projection(np.asarray(embeddings[rows], dtype=np.float32), metadata, thumbnails)
