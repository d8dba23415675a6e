"""Embeddings to look at: a sample of vectors with one metadata row and one thumbnail each.

validate sends one :class:`Projection` through the tracker hub
(:meth:`~embedlab.tracking.base.TrackerHub.log_embeddings`); TensorBoard writes it for its
projector (``tensors.tsv``, ``metadata.tsv``, ``sprite.png``), W&B logs it as a table.
The spool keeps it as one ``.npz`` file (no pickles) until every backend took it.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Projection", "sample_rows"]


@dataclass
class Projection:
    """``n`` embeddings, their metadata columns and their thumbnails.

    >>> p = Projection(np.eye(2, dtype=np.float32), {"label": ["a", "b"]},
    ...                np.zeros((2, 4, 4, 3), np.uint8))
    >>> again = Projection.from_bytes(p.to_bytes())
    >>> again.metadata, again.embeddings.shape, again.thumbnails.shape
    ({'label': ['a', 'b']}, (2, 2), (2, 4, 4, 3))
    """

    embeddings: np.ndarray
    """``[n, D]`` float32."""
    metadata: Mapping[str, Sequence[str]]
    """Column name -> ``n`` strings (row id, label, category, role, path)."""
    thumbnails: np.ndarray | None = None
    """``[n, s, s, 3]`` uint8, or None."""

    def __post_init__(self) -> None:
        n = self.embeddings.shape[0]
        bad = [k for k, v in self.metadata.items() if len(v) != n]
        if self.embeddings.ndim != 2 or bad:
            raise ValueError(f"a projection needs [n, D] embeddings and n values per column {bad}")
        if self.thumbnails is not None and self.thumbnails.shape[0] != n:
            raise ValueError(f"{self.thumbnails.shape[0]} thumbnails for {n} embeddings")

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def columns(self) -> list[str]:
        return list(self.metadata)

    def rows(self) -> list[list[str]]:
        """Metadata as rows, tabs and line breaks turned into spaces (TSV-safe)."""
        clean = {k: [_one_line(str(v)) for v in values] for k, values in self.metadata.items()}
        return [list(row) for row in zip(*clean.values(), strict=True)] or [
            [] for _ in range(len(self))
        ]

    def sprite(self) -> np.ndarray:
        """The thumbnails in one square grid, row by row, blank cells at the end.

        >>> p = Projection(np.zeros((3, 1), np.float32), {},
        ...                np.full((3, 2, 2, 3), 9, np.uint8))
        >>> grid = p.sprite()
        >>> grid.shape, int(grid[0, 0, 0]), int(grid[3, 3, 0])
        ((4, 4, 3), 9, 0)
        """
        assert self.thumbnails is not None
        n, size = len(self), self.thumbnails.shape[1]
        side = math.isqrt(max(n - 1, 0)) + 1
        grid = np.zeros((side * size, side * size, 3), dtype=np.uint8)
        for i, thumb in enumerate(self.thumbnails):
            r, c = divmod(i, side)
            grid[r * size : (r + 1) * size, c * size : (c + 1) * size] = thumb
        return grid

    def to_bytes(self) -> bytes:
        arrays = {"embeddings": self.embeddings.astype(np.float32, copy=False)}
        arrays["columns"] = np.array(self.columns, dtype=str)
        for i, values in enumerate(self.metadata.values()):
            arrays[f"column_{i}"] = np.array([str(v) for v in values], dtype=str)
        if self.thumbnails is not None:
            arrays["thumbnails"] = self.thumbnails
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Projection:
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            columns = [str(c) for c in arrays["columns"]]
            metadata = {c: [str(v) for v in arrays[f"column_{i}"]] for i, c in enumerate(columns)}
            thumbnails = arrays.get("thumbnails")
            return cls(arrays["embeddings"], metadata, thumbnails)


def sample_rows(n_items: int, max_items: int, seed: int) -> np.ndarray:
    """Sorted positions of a seeded sample of at most ``max_items`` of ``n_items``.

    >>> sample_rows(5, 10, seed=0).tolist()
    [0, 1, 2, 3, 4]
    >>> rows = sample_rows(1000, 3, seed=0)
    >>> len(rows), rows.tolist() == sample_rows(1000, 3, seed=0).tolist()
    (3, True)
    """
    if n_items <= max_items:
        return np.arange(n_items)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_items, size=max_items, replace=False))


def _one_line(text: str) -> str:
    return text.replace("\t", " ").replace("\r", " ").replace("\n", " ")
