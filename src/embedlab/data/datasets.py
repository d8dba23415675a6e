"""Datasets over a manifest: items are dicts, images decoded in DataLoader workers.

Item keys (:mod:`embedlab.data.keys`): ``input_tensors`` (C,H,W float), ``labels`` (int),
``paths`` (str), ``idx`` (position in the dataset) and, for :class:`DatasetQueryGallery`,
``is_query``, ``is_gallery``, ``categories`` and ``sequence`` (strings, ``""`` when
absent). Whole columns are public attributes, so code that needs every row's label or
role reads them here instead of iterating over items. :class:`InferenceImages` is the
lean view that embedding passes load: ``(idx, uint8 image)`` items.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from embedlab.data import keys
from embedlab.data.manifest import BBOX_COLUMNS, resolve_paths
from embedlab.data.transforms import split_transform
from embedlab.errors import EmbedlabError

Transform = Callable[[Image.Image], Any]


class ImageReadError(EmbedlabError):
    """An image named by the manifest cannot be decoded."""


def to_rgb(image: Image.Image) -> Image.Image:
    """``image`` as 8-bit RGB, scaling deep images instead of clipping them.

    PIL's own ``convert("RGB")`` clips 16- and 32-bit greyscale (``I;16``, ``I``) to
    255, which turns a 16-bit photo white, and rounds float (``F``) images without
    scaling. Here ``I;16``/``I`` are scaled from their 16-bit range (``I`` holding
    larger values from its own maximum) and ``F`` from [0, 1] (or [0, 255] when its
    values go above 1). Every other mode (1, L, P, RGB, RGBA, CMYK, ...) converts as PIL
    converts it.

    >>> deep = Image.fromarray(np.full((2, 2), 32896, dtype=np.uint16))  # mode I;16
    >>> np.asarray(to_rgb(deep))[0, 0].tolist()
    [128, 128, 128]
    """
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float64)
        if mode == "F":
            top = 255.0 if values.size and np.nanmax(values) > 1.0 else 1.0
        else:
            top = max(65535.0, float(values.max()) if values.size else 0.0)
        scaled = np.clip(np.nan_to_num(values) * (255.0 / top), 0, 255)
        return Image.fromarray(np.rint(scaled).astype(np.uint8), mode="L").convert("RGB")
    return image.convert("RGB")


def load_image(path: str, bbox: tuple[float, float, float, float] | None = None) -> Image.Image:
    """Decode an image as RGB (:func:`to_rgb`) and crop it to ``bbox`` (x_1, y_1, x_2, y_2).

    Raises :class:`ImageReadError` naming the file when it is unreadable, truncated, over
    the pixel limit (``prepare.max_image_pixels``), or when the bbox falls outside it.
    """
    try:
        with warnings.catch_warnings():
            # PIL only warns between 1x and 2x its limit: refuse everything over it.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as handle:
                handle.load()  # a full decode: truncated files fail here
                image = to_rgb(handle)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageReadError(
            f"{path}: {exc} (raise prepare.max_image_pixels if the image is safe)"
        ) from None
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
        self.files = resolve_paths(self.df["path"], self.dataset_root)
        """Each item's image file, resolved against the dataset root."""
        self.labels = self.df["label"].to_numpy(dtype=np.int64)
        """Each item's label (``int64``)."""
        self.paths = self.df["path"].astype(str).to_numpy()
        """Each item's path as the manifest writes it."""
        has_bbox = all(c in self.df.columns for c in BBOX_COLUMNS)
        self._bboxes = self.df[list(BBOX_COLUMNS)].to_numpy(dtype=float) if has_bbox else None

    def __len__(self) -> int:
        return len(self.df)

    def get_labels(self) -> np.ndarray:
        """Labels of every item, in order (what :class:`BalanceSampler` needs)."""
        return self.labels

    def bbox(self, idx: int) -> tuple[float, float, float, float] | None:
        """The item's bbox, or None when the manifest has none for it."""
        if self._bboxes is None or np.isnan(self._bboxes[idx]).any():
            return None
        x1, y1, x2, y2 = self._bboxes[idx].tolist()
        return (x1, y1, x2, y2)

    def read_image(self, idx: int) -> Image.Image:
        """The item's image, cropped to its bbox, before any transform."""
        return load_image(self.files[idx], self.bbox(idx))

    def __getitem__(self, idx: int) -> dict[str, Any]:
        image = self.read_image(idx)
        return {
            keys.INPUT: self.transform(image) if self.transform else image,
            keys.LABELS: int(self.labels[idx]),
            keys.PATHS: str(self.paths[idx]),
            keys.IDX: int(idx),
        }


class DatasetQueryGallery(DatasetWithLabels):
    """Validation items with their query/gallery roles.

    When the manifest has no split info, every item is both query and gallery.

    >>> df = pd.DataFrame({"label": [1, 1], "path": ["a.png", "b.png"], "is_query": [1, 0]})
    >>> ds = DatasetQueryGallery(df, "/data")
    >>> ds.is_query.tolist(), ds.is_gallery.tolist(), ds.categories.tolist()
    ([True, False], [True, True], ['', ''])
    """

    def __init__(
        self, df: pd.DataFrame, dataset_root: str | Path, transform: Transform | None = None
    ) -> None:
        super().__init__(df, dataset_root, transform)
        n = len(self.df)
        self.is_query = self._column("is_query", np.ones(n, dtype=bool)).astype(bool)
        """Each item's query role (all True when the manifest has no such column)."""
        self.is_gallery = self._column("is_gallery", np.ones(n, dtype=bool)).astype(bool)
        """Each item's gallery role (all True when the manifest has no such column)."""
        self.categories = self._column("category", np.full(n, "", dtype=object)).astype(str)
        """Each item's category (``""`` when absent)."""
        self.sequence = self._column("sequence", np.full(n, "", dtype=object)).astype(str)
        """Each item's sequence id (``""`` when absent): never matched within a sequence."""

    def _column(self, name: str, default: np.ndarray) -> np.ndarray:
        return self.df[name].to_numpy() if name in self.df.columns else default

    def columns(self) -> dict[str, Any]:
        """Every item's label, role, category, sequence, path and position, by batch key:
        with ``embeddings`` added, what :class:`~embedlab.metrics.EmbeddingMetrics` reads.

        >>> df = pd.DataFrame({"label": [4, 5], "path": ["a.png", "b.png"]})
        >>> sorted(DatasetQueryGallery(df, "/data").columns())
        ['categories', 'idx', 'is_gallery', 'is_query', 'labels', 'paths', 'sequence']
        """
        # Copies: pandas hands out read-only arrays, which torch will not wrap.
        return {
            keys.LABELS: torch.tensor(self.labels),
            keys.IS_QUERY: torch.tensor(self.is_query),
            keys.IS_GALLERY: torch.tensor(self.is_gallery),
            keys.CATEGORIES: list(self.categories),
            keys.SEQUENCE: list(self.sequence),
            keys.PATHS: self.paths.tolist(),
            keys.IDX: torch.arange(len(self)),
        }

    def __getitem__(self, idx: int) -> dict[str, Any]:
        item = super().__getitem__(idx)
        item.update(
            {
                keys.IS_QUERY: bool(self.is_query[idx]),
                keys.IS_GALLERY: bool(self.is_gallery[idx]),
                keys.CATEGORIES: str(self.categories[idx]),
                keys.SEQUENCE: str(self.sequence[idx]),
            }
        )
        return item


class InferenceImages(Dataset):
    """Only the image of each item of ``dataset``, as ``{idx, input_tensors}``.

    An embedding pass needs nothing else from the loader (labels and roles are whole
    columns of the dataset), so no per-item dict of labels and strings is built and
    collated. When the dataset's transform is the standard ``Resize -> ToTensor ->
    Normalize`` of :func:`~embedlab.data.transforms.eval_transform`, images stop at
    ``uint8`` (4x less to collate and to send from workers) and :attr:`batch_transform`
    does the float conversion and normalisation once per batch: the same element-wise
    operations, so the values are bit-identical.

    >>> import tempfile, pathlib, torch
    >>> from embedlab.data.transforms import eval_transform
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> Image.new("RGB", (4, 4), (10, 200, 30)).save(root / "a.png")
    >>> pre = {"input_size": [3, 8, 8], "mean": [0.5] * 3, "std": [0.2] * 3}
    >>> ds = DatasetWithLabels(pd.DataFrame({"label": [0], "path": ["a.png"]}), root,
    ...                        eval_transform(pre))
    >>> view = InferenceImages(ds)
    >>> item = view[0]
    >>> item["idx"], item["input_tensors"].dtype
    (0, torch.uint8)
    >>> torch.equal(view.batch_transform(item["input_tensors"][None]), ds[0]["input_tensors"][None])
    True
    """

    def __init__(self, dataset: DatasetWithLabels) -> None:
        self.dataset = dataset
        self.item_transform, self.batch_transform = split_transform(dataset.transform)
        steps = getattr(self.item_transform, "transforms", [])
        size = getattr(steps[0], "size", None) if len(steps) == 2 else None
        # The standard split (Resize -> PILToTensor): an image already at the model's size
        # can skip PIL altogether (see :func:`decode_uint8`).
        self._native_size = tuple(size) if isinstance(size, list | tuple) else None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        if self._native_size is not None and self.dataset.bbox(idx) is None:
            tensor = decode_uint8(self.dataset.files[idx])
            if tensor is not None and tuple(tensor.shape[1:]) == self._native_size:
                return {keys.IDX: int(idx), keys.INPUT: tensor}
        image = self.dataset.read_image(idx)
        tensor = self.item_transform(image) if self.item_transform is not None else image
        return {keys.IDX: int(idx), keys.INPUT: tensor}


_FAST_SUFFIXES = (".png", ".jpg", ".jpeg")
_RGB = 3
"""``torchvision.io.ImageReadMode.RGB.value``: the op takes the mode as an int."""


@functools.cache
def _image_decoder() -> Callable[..., torch.Tensor] | None:
    """torchvision's registered ``image::decode_image`` op, or None without its extension.

    Called directly: the public wrapper costs as much again per small image (a
    deprecation warning and two checks on every call; torchvision 0.29 deprecated its
    decoders in favour of TorchCodec, the op itself is unchanged).
    """
    try:
        import torchvision.io  # noqa: F401  (loads the extension that registers the op)

        return torch.ops.image.decode_image
    except (ImportError, RuntimeError, AttributeError):
        return None


def _read_bytes(path: str) -> bytearray | None:
    """The whole file in one writable buffer (``torch.frombuffer`` wants one), or None if
    it changed size while read. ``os.open`` + ``readv``: half the cost of ``open().read()``
    on small files."""
    fd = os.open(path, os.O_RDONLY)
    try:
        data = bytearray(os.fstat(fd).st_size)
        return data if os.readv(fd, [data]) == len(data) else None
    finally:
        os.close(fd)


def decode_uint8(path: str) -> Any:
    """A PNG or JPEG file as a ``uint8`` RGB ``[3, H, W]`` tensor, decoded without PIL.

    torchvision's decoders (libpng, libjpeg-turbo) give the very pixels of
    ``PIL.Image.open(path).convert("RGB")`` for every 8-bit mode (1, L, LA, P, RGB, RGBA,
    CMYK; ``tests/unit/test_image_modes.py``) at a fifth of the cost on small images
    (``tests/benchmarks/bench_embed.py --decoders``). Returns None for anything else (other
    formats, 16-bit images, unreadable files): the caller then takes the PIL path, which
    scales deep images and names the bad file.

    >>> import tempfile, pathlib
    >>> p = str(pathlib.Path(tempfile.mkdtemp()) / "a.png")
    >>> Image.new("L", (3, 2), 7).save(p)
    >>> decode_uint8(p).shape, decode_uint8(p).dtype
    (torch.Size([3, 2, 3]), torch.uint8)
    """
    decode = _image_decoder()
    if decode is None or not path.lower().endswith(_FAST_SUFFIXES):
        return None
    try:
        data = _read_bytes(path)
        if data is None:
            return None
        tensor = decode(torch.frombuffer(data, dtype=torch.uint8), _RGB, False)  # no EXIF turn
    except (RuntimeError, OSError, ValueError):  # PIL's convert() applies none either
        return None
    return tensor if tensor.dtype == torch.uint8 else None
