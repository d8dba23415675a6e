"""Datasets over a manifest: items are dicts, images decoded in DataLoader workers.

Item keys: ``input_tensors`` (C,H,W float), ``labels`` (int), ``paths`` (str), ``idx``
(position in the dataset) and, for :class:`DatasetQueryGallery`, ``is_query``,
``is_gallery``, ``categories`` and ``sequence`` (strings, ``""`` when absent).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from embedlab.data.manifest import BBOX_COLUMNS, resolve_paths
from embedlab.errors import EmbedlabError

Transform = Callable[[Image.Image], Any]


class ImageReadError(EmbedlabError):
    """An image named by the manifest cannot be decoded."""


def load_image(path: str, bbox: tuple[float, float, float, float] | None = None) -> Image.Image:
    """Decode an image as RGB and crop it to ``bbox`` (x_1, y_1, x_2, y_2) when given.

    Raises :class:`ImageReadError` naming the file when it is unreadable or truncated,
    or when the bbox falls outside the image.
    """
    try:
        with Image.open(path) as handle:
            image = handle.convert("RGB")  # forces a full decode: truncated files fail here
    except (OSError, UnidentifiedImageError, SyntaxError) as exc:
        raise ImageReadError(f"{path}: cannot read image ({exc})") from None
    if bbox is not None:
        x1, y1, x2, y2 = bbox
        if x2 > image.width or y2 > image.height:
            raise ImageReadError(
                f"{path}: bbox {list(bbox)} lies outside the {image.width}x{image.height} image"
            )
        image = image.crop((int(x1), int(y1), int(x2), int(y2)))
    return image


class DatasetWithLabels(Dataset):
    """Labelled images for training.

    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> Image.new("RGB", (4, 4)).save(root / "a.png")
    >>> ds = DatasetWithLabels(pd.DataFrame({"label": [3], "path": ["a.png"]}), root)
    >>> item = ds[0]
    >>> item["labels"], item["paths"], item["idx"], item["input_tensors"].size
    (3, 'a.png', 0, (4, 4))
    """

    def __init__(
        self, df: pd.DataFrame, dataset_root: str | Path, transform: Transform | None = None
    ) -> None:
        self.df = df.reset_index(drop=True)
        self.dataset_root = Path(dataset_root)
        self.transform = transform
        self._paths = resolve_paths(self.df["path"], self.dataset_root)
        self._labels = self.df["label"].to_numpy(dtype=np.int64)
        has_bbox = all(c in self.df.columns for c in BBOX_COLUMNS)
        self._bboxes = self.df[list(BBOX_COLUMNS)].to_numpy(dtype=float) if has_bbox else None

    def __len__(self) -> int:
        return len(self.df)

    def get_labels(self) -> np.ndarray:
        """Labels of every item, in order (what :class:`BalanceSampler` needs)."""
        return self._labels

    def bbox(self, idx: int) -> tuple[float, float, float, float] | None:
        """The item's bbox, or None when the manifest has none for it."""
        if self._bboxes is None or np.isnan(self._bboxes[idx]).any():
            return None
        x1, y1, x2, y2 = self._bboxes[idx].tolist()
        return (x1, y1, x2, y2)

    def read_image(self, idx: int) -> Image.Image:
        """The item's image, cropped to its bbox, before any transform."""
        return load_image(self._paths[idx], self.bbox(idx))

    def __getitem__(self, idx: int) -> dict[str, Any]:
        image = self.read_image(idx)
        return {
            "input_tensors": self.transform(image) if self.transform else image,
            "labels": int(self._labels[idx]),
            "paths": str(self.df["path"].iat[idx]),
            "idx": int(idx),
        }


class DatasetQueryGallery(DatasetWithLabels):
    """Validation items with their query/gallery roles.

    When the manifest has no split info, every item is both query and gallery.
    """

    def __init__(
        self, df: pd.DataFrame, dataset_root: str | Path, transform: Transform | None = None
    ) -> None:
        super().__init__(df, dataset_root, transform)
        n = len(self.df)
        self._is_query = self._column("is_query", np.ones(n, dtype=bool)).astype(bool)
        self._is_gallery = self._column("is_gallery", np.ones(n, dtype=bool)).astype(bool)
        self._categories = self._column("category", np.full(n, "", dtype=object)).astype(str)
        self._sequence = self._column("sequence", np.full(n, "", dtype=object)).astype(str)

    def _column(self, name: str, default: np.ndarray) -> np.ndarray:
        return self.df[name].to_numpy() if name in self.df.columns else default

    def __getitem__(self, idx: int) -> dict[str, Any]:
        item = super().__getitem__(idx)
        item.update(
            is_query=bool(self._is_query[idx]),
            is_gallery=bool(self._is_gallery[idx]),
            categories=str(self._categories[idx]),
            sequence=str(self._sequence[idx]),
        )
        return item


def worker_threads_init(_: int) -> None:
    """Keep each DataLoader worker to one thread so workers don't fight the main process."""
    import torch

    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
