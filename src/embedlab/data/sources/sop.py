"""``sop``: Stanford Online Products from its native files.

``prepare.root`` is the ``Stanford_Online_Products`` folder. Expected:
``Ebay_train.txt`` and ``Ebay_test.txt`` (header ``image_id class_id super_class_id
path``, paths relative to the folder, e.g. ``bicycle_final/111085122871_0.JPG``). The
train and test files are used as given: train trains, test validates (every image
both query and gallery). Labels are ``class_id``; ``super_class_id`` becomes
``category``, so metrics are also reported per super-class.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from embedlab.data.sources import PreparedData
from embedlab.data.sources._native import (
    SourceError,
    find_layout,
    read_table,
    require_file,
    require_root,
)

if TYPE_CHECKING:
    from embedlab.config import PrepareParams

LAYOUT = "Stanford Online Products (Ebay_train.txt, Ebay_test.txt and the <class>_final/ folders)"
COLUMNS = ["image_id", "class_id", "super_class_id", "path"]


def _read(path: Path) -> pd.DataFrame:
    header = path.open(encoding="utf-8", errors="replace").readline().split()
    if header != COLUMNS:
        raise SourceError(
            f"{path}: line 1: expected the header {' '.join(COLUMNS)!r}, got {' '.join(header)!r}"
        )
    return read_table(path, COLUMNS, skip=1, ints=["image_id", "class_id", "super_class_id"])


def prepare_sop(cfg: PrepareParams, out_dir: Path) -> PreparedData:
    """The SOP manifest: ``Ebay_train.txt`` trains, ``Ebay_test.txt`` validates."""
    root = require_root(cfg, "the Stanford_Online_Products folder")
    folder = find_layout(root, "Ebay_train.txt", ["Stanford_Online_Products"], LAYOUT)
    train = _read(folder / "Ebay_train.txt")
    test = _read(require_file(folder, "Ebay_test.txt", LAYOUT))
    shared = sorted(set(train["class_id"]) & set(test["class_id"]))
    if shared:
        line = test.loc[test["class_id"] == shared[0], "line"].iloc[0]
        raise SourceError(
            f"{folder / 'Ebay_test.txt'}: line {line}, column 'class_id': class {shared[0]} "
            f"is also in Ebay_train.txt ({len(shared)} shared classes); the SOP split is by class"
        )
    parts = []
    for frame, split in ((train, "train"), (test, "validation")):
        is_val = split == "validation"
        parts.append(
            pd.DataFrame(
                {
                    "label": frame["class_id"],
                    "path": frame["path"],
                    "split": split,
                    "is_query": is_val,
                    "is_gallery": is_val,
                    "category": frame["super_class_id"].astype(str),
                }
            )
        )
    return PreparedData(
        df=pd.concat(parts, ignore_index=True),
        dataset_root=folder.resolve(),
        info={"source": "sop", "root": str(folder.resolve())},
    )
