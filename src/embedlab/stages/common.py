"""Pieces every stage shares: the fixed paths of dvc.yaml and the log."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass

log = logging.getLogger("embedlab")

# Fixed output paths (relative to the repo root), as declared in dvc.yaml.
PREPARED_DIR = Path("data") / "prepared"
MANIFEST = PREPARED_DIR / "manifest.csv"
MODELS_DIR = Path("models")
CHECKPOINTS_DIR = MODELS_DIR / "checkpoints"
REPORTS_DIR = Path("reports")
TRAIN_REPORT = REPORTS_DIR / "train.json"
METRICS_REPORT = REPORTS_DIR / "metrics.json"
CATEGORY_REPORT = REPORTS_DIR / "metrics_per_category.json"
ALL_METRICS_REPORT = REPORTS_DIR / "metrics_all.json"
PER_QUERY_REPORT = REPORTS_DIR / "per_query.csv"
THRESHOLDS_REPORT = REPORTS_DIR / "thresholds.json"
IMAGES_DIR = REPORTS_DIR / "images"
CURVES_DIR = REPORTS_DIR / "plots"
EMBEDDINGS_DIR = Path("data") / "embeddings"
RERANKER_DIR = MODELS_DIR / "reranker"
RERANK_REPORT = REPORTS_DIR / "rerank.json"
RERANKED_RUN = REPORTS_DIR / "reranked"
"""The re-ranked validation as a run folder of its own (``reports/per_query.csv``,
``topk.csv`` inside): ``embedlab compare . reports/reranked`` compares it query by query."""
