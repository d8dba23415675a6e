"""compare's top-k lists redone from data/embeddings equal validate's topk.csv (sequences too)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from embedlab.compare.topk import topk_from_embeddings, topk_table
from embedlab.config import ValidateParams
from embedlab.data.datasets import DatasetQueryGallery
from embedlab.data.manifest import Manifest
from embedlab.embedding.store import ITEM_COLUMNS
from embedlab.stages.validation import build_metric


def _manifest() -> pd.DataFrame:
    """Train rows, then validation rows in sequences of three near-duplicates (video frames):
    a query must never retrieve a frame of its own sequence."""
    rng = np.random.default_rng(3)
    rows = [{"label": i % 2, "path": f"t{i}.png", "split": "train"} for i in range(4)]
    for s in range(8):
        for frame in range(3):
            rows.append(
                {
                    "label": s % 4,
                    "path": f"s{s}_{frame}.png",
                    "split": "validation",
                    "is_query": frame != 2,
                    "is_gallery": frame != 0 or s % 2 == 0,
                    "sequence": f"seq{s}",
                }
            )
    df = pd.DataFrame(rows)
    df["category"] = np.where(rng.random(len(df)) < 0.5, "a", "b")
    return df


def test_recomputed_topk_equals_validates_on_a_manifest_with_sequences(tmp_path: Path) -> None:
    df = _manifest()
    embeddings = np.random.default_rng(0).normal(size=(len(df), 4)).astype(np.float32)
    for s in range(8):  # frames of one sequence are each other's nearest items
        rows = df.index[df["sequence"] == f"seq{s}"]
        embeddings[rows] = embeddings[rows[0]] + 0.01 * embeddings[rows]
    manifest = Manifest(df, tmp_path)

    # validate: the dataset's columns and the model's embeddings, through EmbeddingMetrics
    val_df = manifest.split("validation")
    dataset = DatasetQueryGallery(val_df, tmp_path)
    metric = build_metric(ValidateParams(cmc_top_k=[1, 5]))
    metric.update_data({**dataset.columns(), "embeddings": embeddings[val_df["row_id"]]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # some queries have no relevant gallery item
        metric.compute_metrics()
    assert metric.results is not None
    validated = topk_table(metric.results, val_df["row_id"].to_numpy())

    # compare's fallback: the embed stage's store (items.parquet + embeddings.npy)
    items = df.assign(row_id=np.arange(len(df)))[
        [c for c in ITEM_COLUMNS if c in df or c == "row_id"]
    ]
    recomputed = topk_from_embeddings(embeddings, items, top_k=5)

    pd.testing.assert_frame_equal(recomputed, validated, check_dtype=False)
    sequence_of = dict(zip(np.arange(len(df)), df["sequence"].fillna(""), strict=True))
    same = recomputed["row_id"].map(sequence_of) == recomputed["gallery_row_id"].map(sequence_of)
    assert not same.any()  # no query retrieved a frame of its own sequence
    assert len(recomputed) > 0
