"""The raw-pixel kNN baseline: retrieval metrics with the flattened images as embeddings.

Every validation report carries it, so a run shows its margin over doing nothing. The
pixels are taken at the images' native resolution (scaled to [0, 1], one channel when
every image is grey); images of different sizes, or larger than ``max_side``, are first
resized to ``max_side x max_side`` (raw pixels of large photos would not fit in memory).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from PIL import Image

from embedlab.metrics.embedding_metrics import EmbeddingMetrics

BASELINE_PREFIX = "baseline/raw_pixels"
"""Tracker names of the baseline: ``baseline/raw_pixels/OVERALL/cmc@1``..."""


def raw_pixel_matrix(
    images: list[Image.Image], max_side: int = 64
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Flatten images to ``[N, C*H*W]`` float32 rows in [0, 1]; also return ``(C, H, W)``.

    >>> grey = [Image.new("L", (2, 2), v) for v in (0, 255)]
    >>> rows, shape = raw_pixel_matrix([im.convert("RGB") for im in grey])
    >>> rows.tolist(), shape
    ([[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]], (1, 2, 2))
    """
    sizes = {im.size for im in images}
    if len(sizes) != 1 or max(next(iter(sizes))) > max_side:
        images = [im.resize((max_side, max_side), Image.BILINEAR) for im in images]
    arrays = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) for im in images])
    if np.array_equal(arrays[..., 0], arrays[..., 1]) and np.array_equal(
        arrays[..., 0], arrays[..., 2]
    ):
        arrays = arrays[..., :1]  # grey photos: the copies would only scale the distances
    n, height, width, channels = arrays.shape
    rows = (arrays / 255.0).transpose(0, 3, 1, 2).reshape(n, -1)
    return np.ascontiguousarray(rows, dtype=np.float32), (channels, height, width)


def raw_pixel_metrics(
    metric: EmbeddingMetrics,
    read_image: Callable[[int], Image.Image],
    batch: Mapping[str, Any],
    max_side: int = 64,
) -> dict[str, dict]:
    """The metrics ``metric`` is configured for, with raw pixels as the embeddings.

    ``batch`` is the validation batch the model was scored on (labels, ``is_query``,
    ``is_gallery``, categories...); its ``embeddings`` are replaced by the pixels of
    ``read_image(i)`` for each of its rows, so the baseline sees exactly the same queries
    and gallery. ``metric`` must be a fresh (or reused) accumulator; it is set up here.

    >>> images = [Image.new("L", (2, 2), v) for v in (0, 10, 250, 255)]
    >>> batch = {"labels": torch.tensor([0, 0, 1, 1]), "is_query": torch.ones(4, dtype=bool),
    ...          "is_gallery": torch.ones(4, dtype=bool)}
    >>> m = raw_pixel_metrics(EmbeddingMetrics(cmc_top_k=(1,)), images.__getitem__, batch)
    >>> float(m["OVERALL"]["cmc"][1])
    1.0
    """
    n = len(batch["labels"])
    rows, _ = raw_pixel_matrix([read_image(i) for i in range(n)], max_side=max_side)
    metric.setup(num_samples=n)
    metric.update_data({**batch, "embeddings": torch.from_numpy(rows)})
    return metric.compute_metrics()
