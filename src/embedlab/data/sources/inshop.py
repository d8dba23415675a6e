"""``inshop``: DeepFashion In-shop Clothes Retrieval from its native files.

``prepare.root`` is the In-shop folder. Expected: ``list_eval_partition.txt`` (a count
line, the header ``image_name item_id evaluation_status``, then one line per image),
the ``img/`` folder its paths name and, optionally, ``list_bbox_inshop.txt`` (a count
line, the header ``image_name clothes_type pose_type x_1 y_1 x_2 y_2``); both text
files may also sit in an ``Eval/`` or ``Anno/`` sub-folder as in the original release.
The partition is used as given: ``train`` trains, ``query`` and ``gallery`` validate
with those roles. Labels are the item numbers (``id_00000002`` -> 2), the item ids go
to ``class_name``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from embedlab.data.sources import PreparedData
from embedlab.data.sources._native import SourceError, read_table, require_root

if TYPE_CHECKING:
    from embedlab.config import PrepareParams

LAYOUT = "DeepFashion In-shop (list_eval_partition.txt and the img/ folder)"
PARTITION = "list_eval_partition.txt"
BBOXES = "list_bbox_inshop.txt"
STATUSES = ("train", "query", "gallery")


def _find(root: Path, name: str) -> Path | None:
    for candidate in (root / name, root / "Eval" / name, root / "Anno" / name):
        if candidate.is_file():
            return candidate
    return None


def _check_header(path: Path, expected: list[str]) -> None:
    with path.open(encoding="utf-8", errors="replace") as handle:
        handle.readline()  # the count of images
        header = handle.readline().split()
    if header != expected:
        raise SourceError(
            f"{path}: line 2: expected the header {' '.join(expected)!r}, got {' '.join(header)!r}"
        )


def prepare_inshop(cfg: PrepareParams, out_dir: Path) -> PreparedData:
    """The In-shop manifest: train / query / gallery as in ``list_eval_partition.txt``."""
    root = require_root(cfg, "the DeepFashion In-shop folder")
    partition = _find(root, PARTITION)
    if partition is None:
        raise SourceError(f"{root / PARTITION}: missing; prepare.root does not look like {LAYOUT}")
    columns = ["image_name", "item_id", "evaluation_status"]
    _check_header(partition, columns)
    df = read_table(partition, columns, skip=2)
    df["evaluation_status"] = df["evaluation_status"].str.strip()
    unknown = ~df["evaluation_status"].isin(STATUSES)
    if unknown.any():
        row = df[unknown].iloc[0]
        raise SourceError(
            f"{partition}: line {row['line']}, column 'evaluation_status': unknown value "
            f"{row['evaluation_status']!r} (expected one of {', '.join(STATUSES)})"
        )
    numbers = df["item_id"].str.extract(r"^id_(\d+)$")[0]
    if numbers.isna().any():
        row = df[numbers.isna()].iloc[0]
        raise SourceError(
            f"{partition}: line {row['line']}, column 'item_id': expected id_<digits>, "
            f"got {row['item_id']!r}"
        )
    image_dirs = sorted({p.split("/")[0] for p in df["image_name"] if "/" in p})
    for image_dir in image_dirs:
        if not (root / image_dir).is_dir():
            raise SourceError(
                f"{root / image_dir}: missing folder (named by {partition.name}); expected {LAYOUT}"
            )
    status = df["evaluation_status"]
    out = pd.DataFrame(
        {
            "label": numbers.astype("int64"),
            "path": df["image_name"],
            "split": np.where(status == "train", "train", "validation"),
            "is_query": status == "query",
            "is_gallery": status == "gallery",
            "class_name": df["item_id"],
        }
    )
    boxes_file = _find(root, BBOXES)
    if boxes_file is not None:
        box_columns = ["image_name", "clothes_type", "pose_type", "x_1", "y_1", "x_2", "y_2"]
        _check_header(boxes_file, box_columns)
        # the image names never hold spaces: split every field on whitespace
        boxes = read_table(boxes_file, box_columns, skip=2, floats=["x_1", "y_1", "x_2", "y_2"])
        boxes = boxes.drop_duplicates("image_name").set_index("image_name")
        for column in ("x_1", "y_1", "x_2", "y_2"):
            out[column] = out["path"].map(boxes[column])
    return PreparedData(
        df=out,
        dataset_root=root.resolve(),
        info={"source": "inshop", "root": str(root.resolve()), "bboxes": boxes_file is not None},
    )
