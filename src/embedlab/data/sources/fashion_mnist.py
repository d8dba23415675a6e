"""``fashion_mnist``: Zalando's 70,000 28x28 product photos, read from their IDX files.

The four published files (``train-images-idx3-ubyte.gz`` and the three others) are looked
for, in order, in ``prepare.root``, where Debian's ``dataset-fashion-mnist`` package puts
them (``/usr/share/datasets/fashion-mnist``) and in torchvision's download folder
(``<folder>/FashionMNIST/raw``, under ``~/.cache/embedlab`` by default). Nothing is
downloaded here: ``pipeline/ensure_fashion_mnist.sh`` (run by ``make repro`` and CI) installs
the Debian package or downloads with torchvision.

Protocols (``prepare.fashion_mnist.protocol``):

- ``closed`` (the usual retrieval protocol of Fashion-MNIST): train on a seeded subset of
  the train split, validate on a seeded subset of the test split of the same 10 classes;
- ``open``: the classes in ``open_val_classes`` are held out: the others train (from the
  train split), the held-out ones validate (from the test split).

Every validation image is both query and gallery. Images are written as greyscale PNGs,
``out_dir/images/<split>/<label>/<index in its IDX file>.png``.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from PIL import Image

from embedlab.data.sources import PreparedData
from embedlab.data.sources._native import SourceError

if TYPE_CHECKING:
    from embedlab.config import PrepareParams

CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
"""Fashion-MNIST's label names, by label."""

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
"""IDX file names (without ``.gz``) of each published split: images, labels."""

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where ``apt-get install dataset-fashion-mnist`` puts the four ``.gz`` files."""

SETUP_HINT = (
    "run pipeline/ensure_fashion_mnist.sh (`make repro` does), `apt-get install "
    "dataset-fashion-mnist`, or set prepare.root to a folder holding the four IDX files"
)

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def download_root() -> Path:
    """torchvision's ``root`` for the setup's download: ``$XDG_CACHE_HOME/embedlab``.

    >>> download_root().name
    'embedlab'
    """
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "embedlab"


def candidate_folders(root: str | Path | None = None) -> list[Path]:
    """The folders searched for the IDX files, in order.

    ``root`` (``prepare.root``) may hold the files itself or be a torchvision root.

    >>> [str(p) for p in candidate_folders("/data")][:3]
    ['/data', '/data/FashionMNIST/raw', '/usr/share/datasets/fashion-mnist']
    """
    folders: list[Path] = []
    if root:
        root = Path(root).expanduser()
        folders += [root, root / "FashionMNIST" / "raw"]
    folders += [DEBIAN_DIR, download_root() / "FashionMNIST" / "raw"]
    return folders


def _file_in(folder: Path, name: str) -> Path | None:
    for candidate in (folder / f"{name}.gz", folder / name):
        if candidate.is_file():
            return candidate
    return None


def find_files(root: str | Path | None = None) -> dict[str, tuple[Path, Path]]:
    """``{"train": (images, labels), "test": (images, labels)}`` from the first folder that
    holds all four files (gzipped or not); a one-line :class:`SourceError` otherwise.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> for names in FILES.values():
    ...     for name in names:
    ...         _ = (folder / f"{name}.gz").write_bytes(b"")
    >>> find_files(folder)["test"][1].name
    't10k-labels-idx1-ubyte.gz'
    """
    folders = candidate_folders(root)
    for folder in folders:
        found = {split: tuple(_file_in(folder, n) for n in names) for split, names in FILES.items()}
        if all(path is not None for pair in found.values() for path in pair):
            return found  # type: ignore[return-value]
    looked = ", ".join(str(f) for f in folders)
    raise SourceError(f"Fashion-MNIST IDX files not found (looked in {looked}): {SETUP_HINT}")


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into an array of its declared type and shape.

    >>> import tempfile, struct
    >>> path = Path(tempfile.mkdtemp()) / "x-idx1-ubyte"
    >>> _ = path.write_bytes(struct.pack(">BBBBI", 0, 0, 8, 1, 3) + bytes([7, 8, 9]))
    >>> read_idx(path).tolist()
    [7, 8, 9]
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as exc:
        raise SourceError(f"{path}: cannot read IDX file ({exc})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise SourceError(f"{path}: not an IDX file (bad magic number {data[:4].hex()})")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise SourceError(f"{path}: IDX header truncated")
    shape = tuple(int(v) for v in np.frombuffer(data, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise SourceError(
            f"{path}: IDX data has {len(data) - header} bytes, its header {list(shape)} "
            f"says {expected}"
        )
    return np.frombuffer(data, dtype, offset=header).reshape(shape)


def read_split(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images ``[N, H, W]`` uint8 and labels ``[N]`` of one split, checked against each other."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise SourceError(f"{images_path}: expected uint8 images [N, H, W], got {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise SourceError(
            f"{labels_path}: {labels.shape} labels for the {len(images)} images of {images_path}"
        )
    return images, labels.astype(np.int64)


def sample_per_class(labels: np.ndarray, classes: list[int], per_class: int | None, seed: int):
    """Positions of up to ``per_class`` items of each class (all when None), seeded, sorted.

    >>> labels = np.array([0, 1, 0, 1, 0])
    >>> sample_per_class(labels, [0], 2, seed=0).size, sample_per_class(labels, [0, 1], None, 0)
    (2, array([0, 1, 2, 3, 4]))
    """
    rng = np.random.default_rng(seed)
    chosen: list[np.ndarray] = []
    for label in classes:
        positions = np.flatnonzero(labels == label)
        if per_class is not None and per_class < len(positions):
            positions = rng.choice(positions, size=per_class, replace=False)
        chosen.append(np.sort(positions))
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


def _held_out_of_train(
    labels: np.ndarray, classes: list[int], train: np.ndarray, per_class: int, seed: int
) -> np.ndarray:
    """The ``rerank`` split: ``per_class`` train-file images of each training class that
    are not among the ``train`` positions (seeded, sorted; never a validation class)."""
    if per_class == 0:
        return np.empty(0, dtype=np.int64)
    rest = np.setdiff1d(np.arange(len(labels)), train)
    short = [c for c in classes if int((labels[rest] == c).sum()) < per_class]
    if short:
        raise SourceError(
            f"params.yaml: prepare.fashion_mnist.rerank_per_class: {per_class} is "
            f"more than the train file holds beyond train_per_class for label(s) {short}"
        )
    picked = sample_per_class(labels[rest], classes, per_class, seed + 2)
    return np.sort(rest[picked])


def prepare_fashion_mnist(cfg: PrepareParams, out_dir: Path) -> PreparedData:
    """Write the seeded per-class subsets as PNGs and return their manifest."""
    fm = cfg.fashion_mnist
    files = find_files(cfg.root)
    train_images, train_labels = read_split(*files["train"])
    test_images, test_labels = read_split(*files["test"])
    all_classes = sorted(set(train_labels.tolist()) | set(test_labels.tolist()))
    if fm.protocol == "closed":
        train_classes = val_classes = all_classes
    else:
        unknown = sorted(set(fm.open_val_classes) - set(all_classes))
        if unknown:
            raise SourceError(
                f"params.yaml: prepare.fashion_mnist.open_val_classes: {unknown} are not "
                f"labels of the data (labels: {all_classes})"
            )
        val_classes = sorted(set(fm.open_val_classes))
        train_classes = [c for c in all_classes if c not in val_classes]
    seed = cfg.split_seed if cfg.split_seed is not None else 0
    train = sample_per_class(train_labels, train_classes, fm.train_per_class, seed)
    picks = {
        "train": train,
        "test": sample_per_class(test_labels, val_classes, fm.val_per_class, seed + 1),
        "rerank": _held_out_of_train(train_labels, train_classes, train, fm.rerank_per_class, seed),
    }
    sources = {
        "train": (train_images, train_labels),
        "test": (test_images, test_labels),
        "rerank": (train_images, train_labels),
    }
    rows = []
    # rerank rows come last, so validation row ids do not depend on rerank_per_class
    for idx_split, split in (("train", "train"), ("test", "validation"), ("rerank", "rerank")):
        images, labels = sources[idx_split]
        for position in picks[idx_split].tolist():
            label = int(labels[position])
            rel = f"images/{idx_split}/{label}/{position:05d}.png"
            target = out_dir / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[position], mode="L").save(target)
            rows.append(
                {
                    "label": label,
                    "path": rel,
                    "split": split,
                    "is_query": split == "validation",
                    "is_gallery": split == "validation",
                    "category": "fashion_mnist",
                    "class_name": CLASS_NAMES[label] if label < len(CLASS_NAMES) else str(label),
                }
            )
    folder = files["train"][0].parent
    return PreparedData(
        df=pd.DataFrame(rows),
        dataset_root=out_dir,
        info={
            "source": "fashion_mnist",
            "input": str(folder),
            "protocol": fm.protocol,
            "train_classes": train_classes,
            "validation_classes": val_classes,
        },
    )
