"""``imagefolder``: one sub-folder per class, ``root/<class name>/<image>``.

The split is open-set, as usual in metric learning: a seeded random share
``prepare.val_fraction`` of the classes is held out for validation, where every image
is both query and gallery. Labels are the positions of the class names in sorted
order; the names are kept in the ``class_name`` column. Images stay where they are:
the manifest's paths are relative to ``root``. Images in nested folders below a class
folder belong to that class; files that are not images are skipped.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from embedlab.data.sources import PreparedData
from embedlab.data.sources._native import SourceError, require_root

if TYPE_CHECKING:
    from embedlab.config import PrepareParams

log = logging.getLogger("embedlab")

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
LAYOUT = "an image folder: root/<class name>/<image>"


def list_images(class_dir: Path) -> tuple[list[str], int]:
    """Image files under ``class_dir`` (relative, sorted, hidden entries skipped) and the
    number of other files skipped.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> for name in ("b.JPG", "a.png", "notes.txt", ".hidden.png"):
    ...     _ = (d / name).write_bytes(b"")
    >>> list_images(d)
    (['a.png', 'b.JPG'], 1)
    """
    found: list[str] = []
    skipped = 0
    for folder, dirs, files in os.walk(class_dir):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        rel_folder = os.path.relpath(folder, class_dir)
        for name in files:
            if name.startswith("."):
                continue
            if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                found.append(
                    name if rel_folder == "." else f"{rel_folder}/{name}".replace(os.sep, "/")
                )
            else:
                skipped += 1
    return sorted(found), skipped


def split_classes(names: list[str], val_fraction: float, seed: int) -> set[str]:
    """The class names held out for validation: ``round(n * val_fraction)``, at least 1
    and at most ``n - 1``, drawn with ``seed``.

    >>> held = split_classes(["a", "b", "c", "d"], 0.5, seed=0)
    >>> len(held), held == split_classes(["d", "c", "b", "a"], 0.5, seed=0)
    (2, True)
    """
    ordered = sorted(names)
    n_val = min(len(ordered) - 1, max(1, round(len(ordered) * val_fraction)))
    order = np.random.default_rng(seed).permutation(len(ordered))
    return {ordered[i] for i in order[:n_val]}


def prepare_imagefolder(cfg: PrepareParams, out_dir: Path) -> PreparedData:
    """The manifest of ``prepare.root``'s class folders, split open-set by class."""
    root = require_root(cfg, "a folder with one sub-folder of images per class")
    class_dirs = sorted(
        (entry for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith(".")),
        key=lambda e: e.name,
    )
    loose = [e.name for e in os.scandir(root) if e.is_file() and not e.name.startswith(".")]
    rows: list[dict[str, object]] = []
    skipped = 0
    empty: list[str] = []
    for label, entry in enumerate(class_dirs):
        images, other = list_images(Path(entry.path))
        skipped += other
        if not images:
            empty.append(entry.name)
        rows.extend(
            {"label": label, "path": f"{entry.name}/{image}", "class_name": entry.name}
            for image in images
        )
    with_images = sorted({str(r["class_name"]) for r in rows})
    if len(with_images) < 2:
        found = f"found {len(with_images)} with images" + (
            f" in {len(class_dirs)} folders" if class_dirs else ""
        )
        raise SourceError(
            f"{root}: expected {LAYOUT} with at least 2 class folders of images; {found}"
        )
    if empty:
        log.warning(
            "imagefolder: %d class folder(s) without images skipped: %s",
            len(empty),
            ", ".join(empty[:10]),
        )
    if skipped or loose:
        log.warning(
            "imagefolder: skipped %d non-image file(s) in class folders and %d file(s) in %s",
            skipped,
            len(loose),
            root,
        )
    seed = cfg.split_seed if cfg.split_seed is not None else 0
    held_out = split_classes(with_images, cfg.val_fraction, seed)
    df = pd.DataFrame(rows)
    is_val = df["class_name"].isin(held_out)
    df["split"] = np.where(is_val, "validation", "train")
    df["is_query"] = is_val
    df["is_gallery"] = is_val
    df = df[["label", "path", "split", "is_query", "is_gallery", "class_name"]]
    return PreparedData(
        df=df,
        dataset_root=root.resolve(),
        info={
            "source": "imagefolder",
            "root": str(root.resolve()),
            "classes": len(with_images),
            "validation_classes": len(held_out),
            "split_seed": seed,
        },
    )
