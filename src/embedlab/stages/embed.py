"""embed: an embedding for every manifest row, keyed to the manifest, ready for search."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from embedlab.config import Params
from embedlab.data.datasets import DatasetQueryGallery
from embedlab.data.manifest import load_manifest
from embedlab.data.transforms import eval_transform
from embedlab.io import atomic_path, write_json
from embedlab.models import load_extractor
from embedlab.stages.common import EMBEDDINGS_DIR, MANIFEST, MODELS_DIR, compute_embeddings, log
from embedlab.tracking import open_trackers

EMBEDDINGS_FILE = "embeddings.npy"
ITEMS_FILE = "items.parquet"
INFO_FILE = "info.json"


def run_embed(params: Params, root: Path = Path(".")) -> dict[str, Any]:
    """Write ``data/embeddings/{embeddings.npy, items.parquet, info.json}``."""
    cfg = params.embed
    manifest = load_manifest(root / MANIFEST)
    model = load_extractor(root / MODELS_DIR)
    dataset = DatasetQueryGallery(manifest.df, manifest.dataset_root, eval_transform(model.preprocessing))
    embeddings = compute_embeddings(model, dataset, cfg.batch_size, cfg.num_workers, desc="embed")

    out = root / EMBEDDINGS_DIR
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / EMBEDDINGS_FILE) as tmp, open(tmp, "wb") as handle:
        np.save(handle, embeddings.numpy().astype(np.float32))
    items = manifest.df.assign(row_id=np.arange(len(manifest.df)))
    keep = [c for c in ("row_id", "path", "label", "split", "is_query", "is_gallery", "category", "class_name") if c in items]
    with atomic_path(out / ITEMS_FILE) as tmp:
        items[keep].to_parquet(tmp, index=False)
    info = {
        "rows": len(items),
        "dim": int(embeddings.shape[1]),
        "dataset_root": str(manifest.dataset_root),
        "extractor": model.config(),
        "index": cfg.index,
    }
    write_json(out / INFO_FILE, info)

    hub = open_trackers(params, root, stage="embed", resume=True)
    try:
        hub.log_metrics({"embed/rows": len(items), "embed/dim": info["dim"]}, step=0)
    finally:
        hub.finish()
    log.info("embedded %d rows (dim %d) into %s", len(items), info["dim"], out)
    return info
