"""embed: an embedding for every manifest row, keyed to the manifest, ready for search.

Writes the ``data/embeddings/`` store (:mod:`embedlab.embedding.store`): embeddings,
items and ``info.json``, plus ``index.faiss`` with ``embed.index: faiss``. Search it with
:class:`embedlab.embedding.Searcher` or ``embedlab search``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from embedlab.config import Params
from embedlab.data.datasets import DatasetWithLabels
from embedlab.data.manifest import load_manifest
from embedlab.data.transforms import eval_transform
from embedlab.embedding.inference import embed_dataset
from embedlab.embedding.store import FAISS_INDEX_FILE, StoreInfo, write_store
from embedlab.io import file_sha256
from embedlab.models import load_extractor
from embedlab.models.extractor import EXTRACTOR_WEIGHTS
from embedlab.registries import INDEXES
from embedlab.stages.common import EMBEDDINGS_DIR, MANIFEST, MODELS_DIR, log
from embedlab.tracking import open_trackers


def run_embed(params: Params, root: Path = Path(".")) -> dict[str, Any]:
    """Write ``data/embeddings/`` and return ``info.json``'s data.

    With ``train.trainer`` asking for several devices or nodes, embedding runs on them too;
    ranks other than 0 return ``{}``.
    """
    cfg = params.embed
    # prepare probed every header; decoding names a file that went bad since (one line)
    manifest = load_manifest(root / MANIFEST, image_check="exists")
    model = load_extractor(root / MODELS_DIR)
    dataset = DatasetWithLabels(
        manifest.df, manifest.dataset_root, eval_transform(model.preprocessing)
    )
    started = time.perf_counter()
    embeddings = embed_dataset(
        model, dataset, cfg.batch_size, cfg.num_workers, trainer=params.train.trainer
    )
    if embeddings is None:  # not rank 0: rank 0 writes the outputs
        return {}
    seconds = time.perf_counter() - started

    out = root / EMBEDDINGS_DIR
    faiss_path = out / FAISS_INDEX_FILE
    index_file = None
    if cfg.index == "faiss":
        index = INDEXES.build(
            "faiss", embeddings=embeddings, metric=cfg.distance, factory=cfg.faiss_factory
        )
        index.save(faiss_path)
        index_file = FAISS_INDEX_FILE
    else:  # a FAISS index left by an earlier run would describe other embeddings
        faiss_path.unlink(missing_ok=True)
        faiss_path.with_name(faiss_path.name + ".json").unlink(missing_ok=True)
    info = StoreInfo(
        rows=len(manifest.df),
        dim=int(embeddings.shape[1]),
        dataset_root=str(manifest.dataset_root),
        extractor=model.config(),
        extractor_sha256=file_sha256(root / MODELS_DIR / EXTRACTOR_WEIGHTS),
        index=cfg.index,
        metric=cfg.distance,
        index_file=index_file,
    )
    items = manifest.df.assign(row_id=np.arange(len(manifest.df)))
    write_store(out, embeddings, items, info)

    images_per_second = len(items) / seconds if seconds > 0 else 0.0
    hub = open_trackers(params, root, stage="embed", resume=True)
    try:
        # Facts of the run, not curves: its summary (TensorBoard: the summary text card).
        facts = {"embed/rows": len(items), "embed/dim": info.dim}
        hub.log_summary({**facts, "embed/images_per_s": images_per_second})
    finally:
        hub.finish()
    log.info(
        "embedded %d rows (dim %d, %.0f images/s) into %s",
        len(items),
        info.dim,
        images_per_second,
        out,
    )
    return info.to_json()
