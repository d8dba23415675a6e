"""``cub``: Caltech-UCSD Birds-200-2011 from its native files.

``prepare.root`` is the ``CUB_200_2011`` folder (or the folder the archive was
extracted into). Expected: ``images.txt`` (``<image_id> <path>``),
``image_class_labels.txt`` (``<image_id> <class_id>``), ``classes.txt``
(``<class_id> <name>``), ``images/`` and, optionally, ``bounding_boxes.txt``
(``<image_id> <x> <y> <width> <height>``). Standard metric-learning protocol:
classes 1-100 train, 101-200 validate (every image both query and gallery). Labels are
the class ids, names go to ``class_name``, boxes become ``x_1, y_1, x_2, y_2``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from embedlab.data.sources import PreparedData
from embedlab.data.sources._native import (
    SourceError,
    duplicated_key,
    find_layout,
    read_table,
    require_file,
    require_root,
)

if TYPE_CHECKING:
    from embedlab.config import PrepareParams

LAYOUT = "CUB-200-2011 (images.txt, image_class_labels.txt, classes.txt, images/)"
TRAIN_CLASSES = range(1, 101)
"""Classes 1-100 train; 101-200 validate (the usual zero-shot protocol)."""


def prepare_cub(cfg: PrepareParams, out_dir: Path) -> PreparedData:
    """The CUB-200-2011 manifest with the standard class split and boxes."""
    root = require_root(cfg, "the CUB_200_2011 folder")
    folder = find_layout(root, "images.txt", ["CUB_200_2011"], LAYOUT)
    labels_file = require_file(folder, "image_class_labels.txt", LAYOUT)
    classes_file = require_file(folder, "classes.txt", LAYOUT)
    if not (folder / "images").is_dir():
        raise SourceError(f"{folder / 'images'}: missing folder; expected {LAYOUT}")

    images = read_table(folder / "images.txt", ["image_id", "path"], ints=["image_id"])
    duplicated_key(images, "image_id", folder / "images.txt")
    labels = read_table(labels_file, ["image_id", "class_id"], ints=["image_id", "class_id"])
    duplicated_key(labels, "image_id", labels_file)
    classes = read_table(classes_file, ["class_id", "class_name"], ints=["class_id"])
    duplicated_key(classes, "class_id", classes_file)

    df = images.merge(labels[["image_id", "class_id"]], on="image_id", how="left")
    unlabelled = df["class_id"].isna()
    if unlabelled.any():
        row = df[unlabelled].iloc[0]
        raise SourceError(
            f"{labels_file}: no line for image_id {row['image_id']} "
            f"(images.txt line {row['line']}); {int(unlabelled.sum())} image(s) unlabelled"
        )
    df["class_id"] = df["class_id"].astype("int64")
    names = classes.set_index("class_id")["class_name"]
    unknown = ~df["class_id"].isin(names.index)
    if unknown.any():
        row = labels.set_index("image_id").loc[df.loc[unknown, "image_id"].iloc[0]]
        raise SourceError(
            f"{labels_file}: line {row['line']}, column 'class_id': {row['class_id']} "
            f"is not in {classes_file.name}"
        )
    is_train = df["class_id"].isin(TRAIN_CLASSES)
    out = df.assign(
        label=df["class_id"],
        path="images/" + df["path"],
        split=np.where(is_train, "train", "validation"),
        is_query=~is_train,
        is_gallery=~is_train,
        class_name=df["class_id"].map(names),
    )[["image_id", "label", "path", "split", "is_query", "is_gallery", "class_name"]]

    boxes_file = folder / "bounding_boxes.txt"
    if boxes_file.is_file():
        boxes = read_table(
            boxes_file,
            ["image_id", "x", "y", "w", "h"],
            ints=["image_id"],
            floats=["x", "y", "w", "h"],
        )
        duplicated_key(boxes, "image_id", boxes_file)
        out = out.merge(boxes.drop(columns="line"), on="image_id", how="left")
        out = out.assign(
            x_1=out["x"], y_1=out["y"], x_2=out["x"] + out["w"], y_2=out["y"] + out["h"]
        )
        out = out.drop(columns=["x", "y", "w", "h"])
    return PreparedData(
        df=out.drop(columns="image_id"),
        dataset_root=folder.resolve(),
        info={"source": "cub", "root": str(folder.resolve()), "bboxes": boxes_file.is_file()},
    )
