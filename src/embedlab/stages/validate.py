"""validate: retrieval metrics of the exported extractor on the validation split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import torch

from embedlab.config import Params
from embedlab.data.datasets import DatasetQueryGallery
from embedlab.data.manifest import load_manifest
from embedlab.data.transforms import eval_transform
from embedlab.io import atomic_path, read_json, write_json
from embedlab.models import load_extractor
from embedlab.stages.common import (
    IMAGES_DIR,
    MANIFEST,
    METRICS_REPORT,
    MODELS_DIR,
    PER_QUERY_REPORT,
    TRAIN_REPORT,
    build_metric,
    image_options,
    log,
)
from embedlab.stages.embed import embed_dataset
from embedlab.tracking import open_trackers
from embedlab.tracking.names import metric_names
from embedlab.viz import render_validation_images


def validation_batch(dataset: DatasetQueryGallery, embeddings: torch.Tensor) -> dict[str, Any]:
    """Everything :class:`EmbeddingMetrics` needs, read from the manifest, not from batches."""
    df = dataset.df
    n = len(df)
    return {
        "embeddings": embeddings,
        "labels": torch.as_tensor(dataset.get_labels()),
        "is_query": torch.as_tensor(dataset._is_query),
        "is_gallery": torch.as_tensor(dataset._is_gallery),
        "categories": list(dataset._categories),
        "sequence": list(dataset._sequence),
        "paths": df["path"].astype(str).tolist(),
        "idx": torch.arange(n),
    }


def per_query_table(metric: Any, dataset: DatasetQueryGallery) -> pd.DataFrame:
    """One row per scored query: manifest row id, path, label, category and each metric."""
    positions = metric.query_positions[metric.valid_queries].tolist()
    df = dataset.df
    table = pd.DataFrame(
        {
            "row_id": df["row_id"].iloc[positions].to_numpy() if "row_id" in df else positions,
            "path": df["path"].iloc[positions].to_numpy(),
            "label": df["label"].iloc[positions].to_numpy(),
            "category": dataset._categories[positions],
        }
    )
    for name, per_k in metric.metrics_unreduced["OVERALL"].items():
        if isinstance(per_k, dict) and name != "pcf":
            for k, values in per_k.items():
                table[f"{name}@{k}"] = values.numpy()
    return table


def run_validate(params: Params, root: Path = Path(".")) -> dict[str, Any]:
    """Write ``reports/metrics.json``, ``reports/per_query.csv`` and ``reports/images/``."""
    cfg = params.validate
    manifest = load_manifest(root / MANIFEST)
    model = load_extractor(root / MODELS_DIR)
    val_df = manifest.df.assign(row_id=manifest.df.index).pipe(
        lambda d: d[d["split"] == "validation"]
    )
    dataset = DatasetQueryGallery(
        val_df, manifest.dataset_root, eval_transform(model.preprocessing)
    )
    embeddings = torch.from_numpy(
        embed_dataset(model, dataset, cfg.batch_size, cfg.num_workers, desc="validate: embed")
    )
    metric = build_metric(cfg, verbose=True)
    metric.setup(num_samples=len(dataset))
    metric.update_data(validation_batch(dataset, embeddings))
    metrics = metric.compute_metrics()

    write_json(root / METRICS_REPORT, metrics)
    with atomic_path(root / PER_QUERY_REPORT) as tmp:
        per_query_table(metric, dataset).to_csv(tmp, index=False)
    images = render_validation_images(metric, dataset.read_image, **image_options(cfg, val_df))
    for name, image in images.items():
        with atomic_path(root / IMAGES_DIR / f"{name}.png") as tmp:
            image.save(tmp, format="PNG")

    step = (
        int(read_json(root / TRAIN_REPORT).get("global_step", 0))
        if (root / TRAIN_REPORT).is_file()
        else 0
    )
    hub = open_trackers(params, root, stage="validate", resume=True)
    try:
        flat = metric_names(metrics)
        hub.log_metrics(flat, step=step)
        for name, image in images.items():
            hub.log_image(f"val/{name}", image, step=step)
        hub.log_summary(flat)
        hub.log_artifact(root / METRICS_REPORT)
    finally:
        hub.finish()
    overall = metrics["OVERALL"]
    log.info("validate: %s", {k: v for k, v in metric_names({"OVERALL": overall}).items()})
    return metrics
