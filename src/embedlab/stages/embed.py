"""embed: an embedding for every manifest row, keyed to the manifest, ready for search.

Writes ``data/embeddings/``:

- ``embeddings.npy``: ``[rows, dim]`` float32, in manifest order;
- ``items.parquet``: ``row_id, path, label, split, is_query, is_gallery, category`` (+
  ``class_name`` when the manifest has it); ``row_id`` is the manifest row number;
- ``info.json``: ``rows``, ``dim``, ``dataset_root``, ``extractor`` (config incl.
  preprocessing), ``extractor_sha256``, ``index``, ``metric``, ``index_file``;
- with ``embed.index: faiss``, ``index.faiss`` (+ ``index.faiss.json``), built with
  ``embed.faiss_factory``.

Search them with :class:`embedlab.retrieval.searcher.Searcher` or ``embedlab search``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision import transforms as T
from tqdm.auto import tqdm

from embedlab.config import Params
from embedlab.data.datasets import DatasetQueryGallery
from embedlab.data.manifest import load_manifest
from embedlab.data.transforms import eval_transform
from embedlab.io import atomic_path, write_json
from embedlab.models import load_extractor
from embedlab.models.extractor import EXTRACTOR_WEIGHTS
from embedlab.retrieval.searcher import (
    EMBEDDINGS_FILE,
    FAISS_INDEX_FILE,
    INFO_FILE,
    ITEMS_FILE,
    file_sha256,
)
from embedlab.stages.common import EMBEDDINGS_DIR, MANIFEST, MODELS_DIR, log, make_loader
from embedlab.tracking import open_trackers

__all__ = ["EMBEDDINGS_FILE", "INFO_FILE", "ITEMS_FILE", "embed_dataset", "run_embed"]

ITEM_COLUMNS = (
    "row_id",
    "path",
    "label",
    "split",
    "is_query",
    "is_gallery",
    "category",
    "class_name",
)


class _ImagesOnly(torch.utils.data.Dataset):
    """Only the image of each row, as uint8 when the transform allows it.

    The embed pass needs nothing else from the loader (the item table comes from the
    manifest), so no per-item dict of labels and strings is built and collated. When the
    transform is the standard ``Resize -> ToTensor -> Normalize`` of
    :func:`eval_transform`, items stop at uint8 tensors (4x less to collate and to send
    from workers) and the float conversion and normalisation run once per batch: the
    same element-wise operations, so the values are bit-identical.
    """

    def __init__(self, dataset: DatasetQueryGallery) -> None:
        self.dataset = dataset
        self.item_transform, self.batch_transform = split_transform(dataset.transform)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, idx: int) -> torch.Tensor:
        image = self.dataset.read_image(idx)
        return self.item_transform(image) if self.item_transform is not None else image


def split_transform(transform: Any) -> tuple[Any, Callable[[torch.Tensor], torch.Tensor]]:
    """``(per-item, per-batch)`` halves of a transform; identity batch half if unknown.

    Example:
        >>> from PIL import Image
        >>> full = eval_transform({"input_size": [3, 8, 8], "mean": [0.5] * 3, "std": [0.2] * 3})
        >>> item, batch = split_transform(full)
        >>> image = Image.new("RGB", (4, 4), (10, 200, 30))
        >>> item(image).dtype
        torch.uint8
        >>> torch.equal(batch(item(image)[None]), full(image)[None])
        True
    """
    steps = list(getattr(transform, "transforms", []))
    if (
        len(steps) == 3
        and isinstance(steps[0], T.Resize)
        and isinstance(steps[1], T.ToTensor)
        and isinstance(steps[2], T.Normalize)
    ):
        normalize = steps[2]

        def batch(images: torch.Tensor) -> torch.Tensor:
            # ToTensor's own conversion: to the default float dtype, then / 255.
            return normalize(images.to(dtype=torch.get_default_dtype()).div(255))

        return T.Compose([steps[0], T.PILToTensor()]), batch
    return transform, lambda images: images


@torch.inference_mode()
def embed_dataset(
    model: torch.nn.Module,
    dataset: DatasetQueryGallery,
    batch_size: int,
    num_workers: int,
    desc: str | None = None,
) -> np.ndarray:
    """Embeddings of every item, in dataset order, as one preallocated float32 array.

    ``desc`` shows a progress bar over the batches with that label.

    Example:
        >>> import tempfile, pathlib, pandas as pd
        >>> from PIL import Image
        >>> from embedlab.models import TimmExtractor
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> for name in ("a.png", "b.png", "c.png"):
        ...     Image.new("RGB", (16, 16)).save(root / name)
        >>> df = pd.DataFrame({"label": [0, 0, 1], "path": ["a.png", "b.png", "c.png"]})
        >>> model = TimmExtractor("vit_tiny_patch16_224", img_size=16, patch_size=8, depth=1,
        ...                       embed_dim=32, num_heads=2).eval()
        >>> ds = DatasetQueryGallery(df, root, eval_transform(model.preprocessing))
        >>> embed_dataset(model, ds, batch_size=2, num_workers=0).shape
        (3, 32)
    """
    model.eval()
    device = next(model.parameters()).device
    images_only = _ImagesOnly(dataset)
    loader = make_loader(images_only, batch_size, num_workers, shuffle=False)
    out: np.ndarray | None = None
    start = 0
    batch_transform = images_only.batch_transform
    for images in tqdm(loader, desc=desc, unit="batch", disable=desc is None, leave=False):
        features = model(batch_transform(images).to(device)).float().cpu().numpy()
        if out is None:
            out = np.empty((len(dataset), features.shape[1]), dtype=np.float32)
        out[start : start + len(features)] = features
        start += len(features)
    if out is None:
        dim = int(getattr(model, "feat_dim", 0))
        return np.empty((0, dim), dtype=np.float32)
    return out


def run_embed(params: Params, root: Path = Path(".")) -> dict[str, Any]:
    """Write ``data/embeddings/`` (see the module docstring) and return ``info.json``'s data.

    With ``train.trainer`` asking for several devices or nodes, embedding runs on them too
    (:func:`embedlab.lightning.predict.predict_embeddings`); ranks other than 0 return ``{}``.
    """
    cfg = params.embed
    manifest = load_manifest(root / MANIFEST)
    model = load_extractor(root / MODELS_DIR)
    dataset = DatasetQueryGallery(
        manifest.df, manifest.dataset_root, eval_transform(model.preprocessing)
    )
    started = time.perf_counter()
    from embedlab.lightning.predict import predict_embeddings, wants_distributed

    if wants_distributed(params.train.trainer):
        # Several devices/nodes, as in training: every rank embeds whole batches, rank 0
        # gathers them in manifest order and alone writes the outputs.
        images_only = _ImagesOnly(dataset)
        gathered = predict_embeddings(
            model,
            images_only,
            images_only.batch_transform,
            cfg.batch_size,
            cfg.num_workers,
            params.train.trainer,
        )
        if gathered is None:
            return {}
        embeddings = gathered
    else:
        embeddings = embed_dataset(model, dataset, cfg.batch_size, cfg.num_workers)
    seconds = time.perf_counter() - started

    out = root / EMBEDDINGS_DIR
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / EMBEDDINGS_FILE) as tmp, open(tmp, "wb") as handle:
        np.save(handle, embeddings)
    items = manifest.df.assign(row_id=np.arange(len(manifest.df)))
    keep = [c for c in ITEM_COLUMNS if c in items]
    with atomic_path(out / ITEMS_FILE) as tmp:
        items[keep].to_parquet(tmp, index=False)

    index_file = None
    faiss_path = out / FAISS_INDEX_FILE
    if cfg.index == "faiss":
        from embedlab.retrieval.index import FaissIndex

        FaissIndex(embeddings, metric=cfg.distance, factory=cfg.faiss_factory).save(faiss_path)
        index_file = FAISS_INDEX_FILE
    else:  # a FAISS index left by an earlier run would describe other embeddings
        faiss_path.unlink(missing_ok=True)
        faiss_path.with_name(faiss_path.name + ".json").unlink(missing_ok=True)
    info = {
        "rows": len(items),
        "dim": int(embeddings.shape[1]),
        "dataset_root": str(manifest.dataset_root),
        "extractor": model.config(),
        "extractor_sha256": file_sha256(root / MODELS_DIR / EXTRACTOR_WEIGHTS),
        "index": cfg.index,
        "index_file": index_file,
        "metric": cfg.distance,
    }
    write_json(out / INFO_FILE, info)

    images_per_second = len(items) / seconds if seconds > 0 else 0.0
    hub = open_trackers(params, root, stage="embed", resume=True)
    try:
        hub.log_metrics(
            {
                "embed/rows": len(items),
                "embed/dim": info["dim"],
                "embed/images_per_s": images_per_second,
            },
            step=0,
        )
    finally:
        hub.finish()
    log.info(
        "embedded %d rows (dim %d, %.0f images/s) into %s",
        len(items),
        info["dim"],
        images_per_second,
        out,
    )
    return info
