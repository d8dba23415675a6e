"""The raw-pixel kNN baseline: retrieval metrics with the flattened images as embeddings.

Every validation report carries it, so a run shows its margin over doing nothing. The
pixels are taken at the images' native resolution (scaled to [0, 1], one channel when
every image is grey); images of different sizes, or larger than ``max_side``, are first
resized to ``max_side x max_side`` (raw pixels of large photos would not fit in memory).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
import torch
from PIL import Image

from embedlab.metrics.scoring import MetricOptions, score
from embedlab.metrics.table import MetricTable
from embedlab.retrieval.distance import Metric
from embedlab.retrieval.postprocess import PostProcessor, apply_postprocessors
from embedlab.retrieval.query_gallery import QueryGallery
from embedlab.retrieval.results import retrieve

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


def raw_pixel_table(
    query_gallery: QueryGallery,
    read_image: Callable[[int], Image.Image],
    options: MetricOptions,
    distance: Metric = "euclidean",
    postprocessors: Sequence[PostProcessor] = (),
    max_side: int = 64,
) -> MetricTable:
    """The metrics of ``options`` with raw pixels as the embeddings.

    The query/gallery value the model was scored on keeps its labels, roles, sequences
    and categories; only its embeddings are replaced by the pixels of ``read_image(i)``
    for each of its rows, so the baseline sees exactly the same queries and gallery, and
    the same post-processors.

    >>> import torch
    >>> images = [Image.new("L", (2, 2), v) for v in (0, 10, 250, 255)]
    >>> qg = QueryGallery.from_columns(torch.zeros(4, 3), [0, 0, 1, 1])
    >>> table = raw_pixel_table(qg, images.__getitem__, MetricOptions(cmc_top_k=(1,)))
    >>> table.flat()["cmc@1"]
    1.0
    """
    rows, _ = raw_pixel_matrix([read_image(i) for i in range(len(query_gallery))], max_side)
    pixels = replace(query_gallery, embeddings=torch.from_numpy(rows))
    results = retrieve(pixels, max([options.top_k, *(p.candidates for p in postprocessors)]),
                       metric=distance, at_least_r=options.r_metrics,
                       full_ranking=options.full_ranking_metrics)  # fmt: skip
    return score(results, options, apply_postprocessors(results, postprocessors))
