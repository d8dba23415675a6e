"""The bundled default: scikit-learn's handwritten digits written out as PNG files.

No download is needed: the 1,797 8x8 images ship with scikit-learn. The default split
is open-set, the standard protocol in metric learning: the labels in
``prepare.digits_train_labels`` (0-4) train, the others (5-9) validate, and every
validation image is both query and gallery.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from PIL import Image

from embedlab.data.sources import PreparedData

if TYPE_CHECKING:
    from embedlab.config import PrepareParams


def digits_images(size: int) -> tuple[np.ndarray, np.ndarray]:
    """The digits as ``uint8`` images of ``size x size`` and their labels.

    >>> images, labels = digits_images(16)
    >>> images.shape, images.dtype, sorted(set(labels.tolist())) == list(range(10))
    ((1797, 16, 16), dtype('uint8'), True)
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.clip(digits.images * (255.0 / 16.0), 0, 255).astype(np.uint8)
    # Bilinear upscaling keeps strokes smooth; 8x8 is too small for patch-based models.
    resized = np.stack(
        [np.asarray(Image.fromarray(p).resize((size, size), Image.BILINEAR)) for p in pixels]
    )
    return resized, digits.target.astype(np.int64)


def prepare_digits(cfg: PrepareParams, out_dir: Path) -> PreparedData:
    """Write ``out_dir/images/<label>/<i>.png`` and return the open-set manifest."""
    images, labels = digits_images(cfg.digits_image_size)
    train_labels = set(cfg.digits_train_labels)
    rows = []
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        rel = f"images/{label}/{i:04d}.png"
        target = out_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image, mode="L").save(target)
        is_train = int(label) in train_labels
        rows.append(
            {
                "label": int(label),
                "path": rel,
                "split": "train" if is_train else "validation",
                "is_query": not is_train,
                "is_gallery": not is_train,
                "category": "digits",
            }
        )
    return PreparedData(
        df=pd.DataFrame(rows),
        dataset_root=out_dir,
        info={"source": "digits", "image_size": cfg.digits_image_size},
    )
