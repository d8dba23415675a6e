"""The ``data/embeddings/`` store: its files, its ``info.json`` contract, writer and reader.

A store holds:

- ``embeddings.npy``: ``[rows, dim]`` float32, in manifest order;
- ``items.parquet``: ``row_id, path, label, split`` and those of ``is_query, is_gallery,
  category, sequence, class_name`` the manifest has; ``row_id`` is the manifest row number;
- ``info.json``: :class:`StoreInfo`;
- with a FAISS index, ``index.faiss`` (+ ``index.faiss.json``).

Every file is written atomically; a store is read back with :func:`read_store`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from embedlab.errors import EmbedlabError
from embedlab.io import atomic_path, read_json, write_json

EMBEDDINGS_FILE = "embeddings.npy"
ITEMS_FILE = "items.parquet"
INFO_FILE = "info.json"
FAISS_INDEX_FILE = "index.faiss"

ITEM_COLUMNS = (
    "row_id",
    "path",
    "label",
    "split",
    "is_query",
    "is_gallery",
    "category",
    "sequence",
    "class_name",
)
"""Manifest columns copied into ``items.parquet`` (those the manifest has)."""


@dataclass
class StoreInfo:
    """``info.json``: what the embeddings are and how they were made.

    >>> info = StoreInfo(rows=2, dim=8, dataset_root="/data", extractor={"arch": "x"},
    ...                  extractor_sha256="ab", index="exact", metric="euclidean")
    >>> StoreInfo.from_json(info.to_json(), "info.json") == info
    True
    >>> StoreInfo.from_json({"rows": 2}, "info.json")
    Traceback (most recent call last):
    ...
    embedlab.errors.EmbedlabError: info.json: missing keys dim, dataset_root, ...
    """

    rows: int
    dim: int
    dataset_root: str
    extractor: dict[str, Any]
    """The extractor's config (arch and preprocessing), as ``extractor.json`` holds it."""
    extractor_sha256: str
    """Hash of the weights the embeddings came from (a changed model is caught)."""
    index: str
    """The index ``embed.index`` built (a name of :data:`embedlab.registries.INDEXES`)."""
    metric: str
    index_file: str | None = None
    """The FAISS index file, when one was built."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str | Path) -> StoreInfo:
        """Validate ``info.json``'s data (keys of a newer writer are ignored)."""
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in data and n != "index_file"]
        if missing:
            shown = ", ".join(missing[:2]) + (", ..." if len(missing) > 2 else "")
            raise EmbedlabError(f"{source}: missing keys {shown} (rerun the embed stage)")
        return cls(**{n: data[n] for n in names if n in data})


def write_store(
    out_dir: str | Path, embeddings: np.ndarray, items: pd.DataFrame, info: StoreInfo
) -> None:
    """Write ``embeddings.npy``, ``items.parquet`` (the :data:`ITEM_COLUMNS` it has) and
    ``info.json`` into ``out_dir``, each atomically; ``info.json`` last, so a reader
    never sees an ``info.json`` newer than its data.

    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp())
    >>> items = pd.DataFrame({"row_id": [0], "path": ["a.png"], "label": [3], "extra": [1]})
    >>> info = StoreInfo(1, 2, "/data", {}, "ab", "exact", "euclidean")
    >>> write_store(out, np.zeros((1, 2), np.float32), items, info)
    >>> read_store(out).items.columns.tolist()
    ['row_id', 'path', 'label']
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if len(embeddings) != len(items) or info.rows != len(items):
        raise EmbedlabError(
            f"{out}: {len(embeddings)} embeddings, {len(items)} items and info.rows "
            f"{info.rows} must agree"
        )
    with atomic_path(out / EMBEDDINGS_FILE) as tmp, open(tmp, "wb") as handle:
        np.save(handle, np.ascontiguousarray(embeddings, dtype=np.float32))
    keep = [c for c in ITEM_COLUMNS if c in items]
    with atomic_path(out / ITEMS_FILE) as tmp:
        items[keep].to_parquet(tmp, index=False)
    write_json(out / INFO_FILE, info.to_json())


@dataclass
class Store:
    """A store read back: its info, its items and (memory-mapped) embeddings."""

    root: Path
    info: StoreInfo
    items: pd.DataFrame

    def embeddings(self) -> np.ndarray:
        """``[rows, dim]`` float32, memory-mapped (nothing is read until used)."""
        path = self.root / EMBEDDINGS_FILE
        if not path.is_file():
            raise EmbedlabError(f"{path}: not found (run the embed stage first)")
        try:
            array = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise EmbedlabError(f"{path}: cannot read embeddings ({exc})") from None
        if array.ndim != 2:
            raise EmbedlabError(f"{path}: expected an [N, D] array, got shape {array.shape}")
        return array

    @property
    def faiss_file(self) -> Path:
        return self.root / (self.info.index_file or FAISS_INDEX_FILE)


def read_store(root: str | Path) -> Store:
    """Open a store written by :func:`write_store` (clear errors when a file is missing)."""
    root = Path(root)
    info_path = root / INFO_FILE
    if not info_path.is_file():
        raise EmbedlabError(f"{info_path}: not found (run the embed stage first)")
    try:
        info = StoreInfo.from_json(read_json(info_path), info_path)
    except json.JSONDecodeError as exc:
        raise EmbedlabError(f"{info_path}: not valid JSON ({exc})") from None
    items_path = root / ITEMS_FILE
    if not items_path.is_file():
        raise EmbedlabError(f"{items_path}: not found (run the embed stage first)")
    return Store(root, info, pd.read_parquet(items_path))
