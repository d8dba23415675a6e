"""Pictures for the compare page: a run's row id -> image file, and embedded thumbnails.

Images come from the manifest ``data/prepared/manifest.csv`` under the run's folder (for a
folder run) or the current repository (for git revisions and experiments, whose
``data/prepared`` lives only in the DVC cache). The manifest is used only when its paths
agree with the run's ``per_query.csv``; otherwise the page shows empty frames.
"""

from __future__ import annotations

import base64
import io
import logging
from pathlib import Path

import pandas as pd
from PIL import Image, UnidentifiedImageError

from embedlab.data.manifest import resolve_paths
from embedlab.io import read_json

__all__ = ["ImageLookup", "image_data_uri"]

log = logging.getLogger("embedlab")

MANIFEST = Path("data") / "prepared" / "manifest.csv"
THUMBNAIL = 88
"""Longest side of an embedded thumbnail (the page frames it in 96 px tiles)."""
SMALL = 64
"""Images up to this size are embedded as they are (PNG) and scaled by the browser."""


def image_data_uri(path: str | Path, size: int = THUMBNAIL) -> str | None:
    """A ``data:`` URI of a thumbnail of the image at ``path`` (None if unreadable).

    Small images stay at full size as PNG (the page scales them up pixelated); larger
    ones become a JPEG thumbnail whose longest side is ``size``.

    Example:
        >>> import tempfile
        >>> file = Path(tempfile.mkdtemp()) / "red.png"
        >>> Image.new("RGB", (8, 8), "red").save(file)
        >>> image_data_uri(file)[:22], image_data_uri(file.with_name("gone.png"))
        ('data:image/png;base64,', None)
    """
    try:
        with Image.open(path) as opened:
            image = opened.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError):
        return None
    buffer = io.BytesIO()
    if max(image.size) <= SMALL:
        image.save(buffer, format="PNG")
        kind = "png"
    else:
        image.thumbnail((size, size))
        image.save(buffer, format="JPEG", quality=85)
        kind = "jpeg"
    return f"data:image/{kind};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class ImageLookup:
    """Image files of one run by manifest row id, with a cache of their thumbnails.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> (root / MANIFEST).parent.mkdir(parents=True)
        >>> Image.new("L", (4, 4)).save(root / "data/prepared/q.png")
        >>> _ = (root / MANIFEST).write_text("label,path,split\\n1,q.png,validation\\n")
        >>> lookup = ImageLookup.from_root(root)
        >>> lookup.path(0).endswith("data/prepared/q.png"), lookup.path(7)
        (True, None)
        >>> lookup.uri(0)[:14]
        'data:image/png'
    """

    def __init__(self, paths: dict[int, str], relative: dict[int, str] | None = None) -> None:
        self._paths = paths
        self._relative = relative or {}
        self._uris: dict[int, str | None] = {}

    @classmethod
    def from_root(cls, root: Path) -> ImageLookup:
        """From ``root/data/prepared/manifest.csv``; empty when there is none."""
        from embedlab.data.manifest import SIDECAR_NAME, read_manifest_csv

        path = Path(root) / MANIFEST
        if not path.is_file():
            return cls({})
        # Only the paths are needed: no validation (the run's stages did it), so a manifest
        # that the current checks would reject still gives its pictures.
        try:
            df = read_manifest_csv(path)
            sidecar = path.with_name(SIDECAR_NAME)
            recorded = read_json(sidecar).get("dataset_root") if sidecar.is_file() else None
        except Exception as exc:  # a bad manifest only costs the pictures
            log.warning("compare: cannot read %s (%s): no images", path, exc)
            return cls({})
        if "path" not in df:
            log.warning("compare: %s has no 'path' column: no images", path)
            return cls({})
        dataset_root = Path(recorded) if recorded else path.parent
        if not dataset_root.is_absolute():
            dataset_root = path.parent / dataset_root
        paths = df["path"].fillna("").astype(str)
        ids = list(range(len(df)))  # row ids are manifest row numbers, as in validate
        absolute = resolve_paths(paths, dataset_root.resolve())
        relative = paths.tolist()
        return cls(dict(zip(ids, absolute, strict=True)), dict(zip(ids, relative, strict=True)))

    def agrees_with(self, per_query: pd.DataFrame) -> bool:
        """Whether every query's manifest path is the path ``per_query.csv`` recorded."""
        if not self._paths:
            return False
        for row_id, path in zip(per_query["row_id"], per_query["path"].astype(str), strict=True):
            if self._relative.get(int(row_id)) != path:
                return False
        return True

    def path(self, row_id: int) -> str | None:
        """Absolute path of row ``row_id`` (None when the manifest has no such row)."""
        return self._paths.get(int(row_id))

    def uri(self, row_id: int) -> str | None:
        """Embedded thumbnail of row ``row_id`` (computed once)."""
        row_id = int(row_id)
        if row_id not in self._uris:
            path = self.path(row_id)
            self._uris[row_id] = image_data_uri(path) if path is not None else None
        return self._uris[row_id]

    @classmethod
    def empty(cls) -> ImageLookup:
        """A lookup that finds nothing (frames without pictures)."""
        return cls({})
