"""``csv``: a manifest the user already has (Open Metric Learning's column names).

``prepare.root`` is the CSV file (or a folder holding ``manifest.csv``);
``prepare.dataset_root`` is the folder its relative paths start from (default: the
CSV's folder). The rows pass through unchanged (relative paths stay relative) and are
validated by the prepare stage like any other source, with errors naming the CSV's
own lines.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from embedlab.data.manifest import MANIFEST_NAME, read_manifest_csv
from embedlab.data.sources import PreparedData
from embedlab.data.sources._native import SourceError

if TYPE_CHECKING:
    from embedlab.config import PrepareParams


def prepare_csv(cfg: PrepareParams, out_dir: Path) -> PreparedData:
    """Read the CSV named by ``prepare.root``; the stage validates it."""
    if not cfg.root:
        raise SourceError(
            "params.yaml: prepare.root: the 'csv' source needs the path of a manifest CSV "
            "(prepare.root is not set)"
        )
    path = Path(cfg.root).expanduser()
    if path.is_dir() and (path / MANIFEST_NAME).is_file():
        path = path / MANIFEST_NAME
    if not path.exists():
        raise SourceError(f"{path}: not found (prepare.root for the 'csv' source)")
    if not path.is_file():
        raise SourceError(
            f"{path}: a folder without {MANIFEST_NAME}; prepare.root must name the CSV file"
        )
    if cfg.dataset_root:
        root = Path(cfg.dataset_root).expanduser()
        if not root.is_dir():
            raise SourceError(f"params.yaml: prepare.dataset_root: {root} is not a folder")
    else:
        root = path.parent
    df = read_manifest_csv(path)
    return PreparedData(
        df=df,
        dataset_root=root.resolve(),
        info={"source": "csv", "csv": str(path.resolve())},
        name=str(path),
    )
