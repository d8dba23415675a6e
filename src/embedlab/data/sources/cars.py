"""``cars``: Stanford Cars (Cars196) from its native files.

``prepare.root`` is the folder holding ``cars_annos.mat`` and the image folder it
names (``car_ims/`` in the original release). Each annotation gives
``relative_im_path``, ``bbox_x1, bbox_y1, bbox_x2, bbox_y2``, ``class`` (1-196) and
``test``; ``class_names`` gives the class names. Standard metric-learning protocol:
classes 1-98 train, 99-196 validate (every image both query and gallery); the
``test`` flag is ignored. Labels are the class ids; boxes are kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from embedlab.data.sources import PreparedData
from embedlab.data.sources._native import SourceError, find_layout, require_root

if TYPE_CHECKING:
    from embedlab.config import PrepareParams

LAYOUT = "Cars196 (cars_annos.mat and the car_ims/ folder it names)"
ANNOTATION_FIELDS = ("relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class")
TRAIN_CLASSES = range(1, 99)
"""Classes 1-98 train; 99-196 validate."""


def _column(annotations: np.ndarray, name: str, path: Path) -> list[Any]:
    values = [np.asarray(v).ravel() for v in annotations[name]]
    for i, value in enumerate(values):
        if value.size != 1:
            raise SourceError(
                f"{path}: annotations[{i}].{name}: expected one value, got {value.size}"
            )
    return [v[0].item() if hasattr(v[0], "item") else v[0] for v in values]


def read_annotations(path: Path) -> tuple[pd.DataFrame, list[str] | None]:
    """The annotations of ``cars_annos.mat`` as a DataFrame, and the class names if present."""
    from scipy.io import loadmat

    try:
        mat = loadmat(str(path), squeeze_me=True)
    except Exception as exc:  # scipy fails in many ways on a bad file; all are the user's file
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SourceError(f"{path}: not a readable MATLAB file ({reason})") from None
    if "annotations" not in mat:
        keys = ", ".join(k for k in mat if not k.startswith("__"))
        raise SourceError(f"{path}: key 'annotations' missing (found: {keys})")
    annotations = np.atleast_1d(mat["annotations"])
    names = annotations.dtype.names or ()
    absent = [f for f in ANNOTATION_FIELDS if f not in names]
    if absent:
        raise SourceError(
            f"{path}: annotations lack field(s) {', '.join(absent)} (found: {', '.join(names)})"
        )
    df = pd.DataFrame({f: _column(annotations, f, path) for f in ANNOTATION_FIELDS})
    for column in ANNOTATION_FIELDS[1:]:
        values = pd.to_numeric(df[column], errors="coerce")
        if values.isna().any():
            i = int(values.isna().to_numpy().nonzero()[0][0])
            raise SourceError(
                f"{path}: annotations[{i}].{column}: expected a number, got {df[column][i]!r}"
            )
        df[column] = values
    class_names = None
    if "class_names" in mat:
        class_names = [str(np.asarray(n).ravel()[0]) for n in np.atleast_1d(mat["class_names"])]
    return df, class_names


def prepare_cars(cfg: PrepareParams, out_dir: Path) -> PreparedData:
    """The Cars196 manifest with the standard class split and boxes."""
    root = require_root(cfg, "the folder holding cars_annos.mat and car_ims/")
    folder = find_layout(root, "cars_annos.mat", ["stanford_cars", "cars196", "Cars196"], LAYOUT)
    path = folder / "cars_annos.mat"
    ann, class_names = read_annotations(path)
    image_dirs = sorted({str(p).split("/")[0] for p in ann["relative_im_path"] if "/" in str(p)})
    for image_dir in image_dirs:
        if not (folder / image_dir).is_dir():
            raise SourceError(
                f"{folder / image_dir}: missing folder (named by {path.name}); expected {LAYOUT}"
            )
    classes = ann["class"].astype("int64")
    if class_names is not None:
        beyond = classes[(classes < 1) | (classes > len(class_names))]
        if len(beyond):
            i = int(beyond.index[0])
            raise SourceError(
                f"{path}: annotations[{i}].class: {beyond.iloc[0]} is not in class_names "
                f"(1-{len(class_names)})"
            )
    is_train = classes.isin(TRAIN_CLASSES)
    df = pd.DataFrame(
        {
            "label": classes,
            "path": ann["relative_im_path"].astype(str),
            "split": np.where(is_train, "train", "validation"),
            "is_query": ~is_train,
            "is_gallery": ~is_train,
            "x_1": ann["bbox_x1"].astype(float),
            "y_1": ann["bbox_y1"].astype(float),
            "x_2": ann["bbox_x2"].astype(float),
            "y_2": ann["bbox_y2"].astype(float),
        }
    )
    if class_names is not None:
        df["class_name"] = [class_names[c - 1] for c in classes]
    return PreparedData(
        df=df,
        dataset_root=folder.resolve(),
        info={"source": "cars", "root": str(folder.resolve())},
    )
