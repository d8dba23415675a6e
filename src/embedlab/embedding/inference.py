"""Images -> embeddings: datasets in one process or on Lightning's strategies, and images.

Every embedding pass of the project runs through here (validate, embed, search) or
through the same :class:`~embedlab.lightning.ExtractorModule` steps (validation during
training), so they decode, preprocess and batch alike.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from embedlab.data import keys
from embedlab.data.datasets import DatasetWithLabels, InferenceImages, load_image
from embedlab.data.loaders import inference_loader
from embedlab.data.transforms import eval_transform, split_transform
from embedlab.embedding.gather import assemble

if TYPE_CHECKING:
    from embedlab.config import TrainerParams


def wants_distributed(trainer: TrainerParams | None) -> bool:
    """True when ``train.trainer`` asks for more than one process (devices, nodes, strategy).

    >>> from embedlab.config import TrainerParams
    >>> wants_distributed(TrainerParams()), wants_distributed(TrainerParams(devices=2))
    (False, True)
    >>> wants_distributed(TrainerParams(strategy="ddp"))
    True
    """
    if trainer is None:
        return False
    devices = trainer.devices
    single = devices in (1, "1") or (isinstance(devices, list) and len(devices) == 1)
    return not single or trainer.num_nodes > 1 or trainer.strategy != "auto"


@torch.inference_mode()
def embed_dataset(
    model: torch.nn.Module,
    dataset: DatasetWithLabels,
    batch_size: int,
    num_workers: int = 0,
    *,
    trainer: TrainerParams | None = None,
    desc: str | None = None,
) -> np.ndarray | None:
    """Embeddings of every item, in dataset order, as one float32 ``[N, D]`` array.

    With ``trainer`` asking for several devices or nodes (:func:`wants_distributed`),
    every rank embeds whole single-process batches and rank 0 gets them all back in
    order (each row equals the one-process result bit for bit on the same hardware);
    other ranks get ``None`` and must not write outputs. That needs a strategy that
    keeps the launching process as rank 0 (``ddp``, torchrun, SLURM), not
    ``ddp_spawn``. ``desc`` shows a progress bar with that label (one process).

    Example:
        >>> import tempfile, pathlib, pandas as pd
        >>> from embedlab.models import TimmExtractor
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> for name in ("a.png", "b.png", "c.png"):
        ...     Image.new("RGB", (16, 16)).save(root / name)
        >>> df = pd.DataFrame({"label": [0, 0, 1], "path": ["a.png", "b.png", "c.png"]})
        >>> model = TimmExtractor("vit_tiny_patch16_224", img_size=16, patch_size=8, depth=1,
        ...                       embed_dim=32, num_heads=2).eval()
        >>> ds = DatasetWithLabels(df, root, eval_transform(model.preprocessing))
        >>> embed_dataset(model, ds, batch_size=2).shape
        (3, 32)
    """
    images = InferenceImages(dataset)
    if wants_distributed(trainer):
        assert trainer is not None
        return _embed_distributed(model, images, batch_size, num_workers, trainer)
    model.eval()
    device = next(model.parameters()).device
    loader = inference_loader(images, batch_size, num_workers)
    parts = []
    for batch in tqdm(loader, desc=desc, unit="batch", disable=desc is None, leave=False):
        pixels = batch[keys.INPUT].to(device, non_blocking=True)  # pinned on a GPU
        embeddings = model(images.batch_transform(pixels))
        parts.append({keys.IDX: batch[keys.IDX], keys.EMBEDDINGS: embeddings})
    return assemble(parts, len(dataset), int(getattr(model, "feat_dim", 0)))


def _embed_distributed(
    model: torch.nn.Module,
    images: InferenceImages,
    batch_size: int,
    num_workers: int,
    trainer_params: TrainerParams,
) -> np.ndarray | None:
    from embedlab.lightning import EmbeddingCollector, ExtractorModule
    from embedlab.lightning.trainer import build_trainer

    collector = EmbeddingCollector()
    runner = build_trainer(
        trainer_params,
        precision="32-true",  # the single-process pass runs in float32
        logger=False,
        callbacks=[collector],
        enable_checkpointing=False,
        enable_progress_bar=False,
    )
    module = ExtractorModule(model, inference_transform=images.batch_transform)
    with warnings.catch_warnings():
        # ShardedBatchSampler returns every index (its own doctest); Lightning cannot tell.
        warnings.filterwarnings("ignore", message="You are using a custom batch sampler")
        runner.predict(
            module, inference_loader(images, batch_size, num_workers), return_predictions=False
        )
    if not runner.is_global_zero:
        return None
    return assemble(collector.parts, len(images), int(getattr(model, "feat_dim", 0)))


@torch.inference_mode()
def embed_images(
    model: torch.nn.Module,
    images: Sequence[str | Image.Image],
    preprocessing: dict[str, Any],
    batch_size: int = 64,
) -> torch.Tensor:
    """Embeddings of image files or PIL images, preprocessed exactly as datasets are.

    >>> from embedlab.models import TimmExtractor
    >>> model = TimmExtractor("vit_tiny_patch16_224", img_size=16, patch_size=8, depth=1,
    ...                       embed_dim=32, num_heads=2).eval()
    >>> embed_images(model, [Image.new("RGB", (20, 20))], model.preprocessing).shape
    torch.Size([1, 32])
    """
    model.eval()
    device = next(model.parameters()).device
    chunks = []
    for start in range(0, len(images), batch_size):
        batch = preprocess_images(images[start : start + batch_size], preprocessing)
        chunks.append(model(batch.to(device)).float().cpu())
    dim = int(getattr(model, "feat_dim", 0))
    return torch.cat(chunks) if chunks else torch.empty(0, dim)


def preprocess_images(
    images: Sequence[str | Image.Image], preprocessing: dict[str, Any]
) -> torch.Tensor:
    """``[N, 3, H, W]``: image files or PIL images preprocessed exactly as datasets are.

    >>> pre = {"input_size": [3, 8, 8], "mean": [0.5] * 3, "std": [0.5] * 3}
    >>> preprocess_images([Image.new("RGB", (20, 20))], pre).shape
    torch.Size([1, 3, 8, 8])
    """
    per_item, per_batch = split_transform(eval_transform(preprocessing))
    batch = [
        per_item(img.convert("RGB") if isinstance(img, Image.Image) else load_image(str(img)))
        for img in images
    ]
    if not batch:
        return torch.empty(0, *preprocessing["input_size"])
    return per_batch(torch.stack(batch))
