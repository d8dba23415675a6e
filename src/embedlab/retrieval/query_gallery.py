"""The query/gallery value: every validation item once, with what retrieval needs of it.

Validate builds it from the validation dataset's columns and the model's embeddings;
``embedlab compare`` builds the same value from the embed stage's store
(:meth:`QueryGallery.from_items`), so both search exactly the same problem. It is frozen:
search (:func:`~embedlab.retrieval.results.retrieve`), post-processors and scoring read
it and never change it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from embedlab.errors import EmbedlabError

__all__ = ["NO_SEQUENCE", "QueryGallery", "factorize", "sequence_codes"]

NO_SEQUENCE = -1
"""Sequence code of an item that belongs to no sequence."""


@dataclass(frozen=True, eq=False)
class QueryGallery:
    """Embeddings, labels and roles of N items; an item may be a query, a gallery item or both.

    Attributes:
        embeddings: ``[N, D]`` float32.
        labels: ``[N]`` int64.
        is_query, is_gallery: ``[N]`` bool.
        sequence: ``[N]`` int64 codes; items of one sequence (``>= 0``) never match each
            other, ``-1`` (:data:`NO_SEQUENCE`) = none.
        row_ids: ``[N]`` int64, each item's id in the reports (manifest ``row_id``).
        categories: one name per item (``""`` = none), or None.
        paths: one image path per item, or None.

    Build it with :meth:`from_columns`, which checks and converts every column.

    Example:
        >>> qg = QueryGallery.from_columns(torch.eye(3), labels=[0, 0, 1], sequence=["a", "a", ""])
        >>> qg.sequence.tolist(), qg.query_positions.tolist(), len(qg)
        ([1, 1, -1], [0, 1, 2], 3)
    """

    embeddings: Tensor
    labels: Tensor
    is_query: Tensor
    is_gallery: Tensor
    sequence: Tensor
    row_ids: Tensor
    categories: list[str] | None = None
    paths: list[str] | None = None

    @classmethod
    def from_columns(
        cls,
        embeddings: Any,
        labels: Any,
        *,
        is_query: Any = None,
        is_gallery: Any = None,
        sequence: Any = None,
        row_ids: Any = None,
        categories: Any = None,
        paths: Any = None,
    ) -> QueryGallery:
        """Check and convert per-item columns (tensors, arrays or lists); None = default.

        Defaults: every item is query and gallery, no sequence, ``row_ids`` = positions.
        """
        x = _float_matrix(embeddings)
        n = x.shape[0]
        qg = cls(
            embeddings=x,
            labels=_int_column(labels, "labels", n),
            is_query=_bool_column(is_query, "is_query", n),
            is_gallery=_bool_column(is_gallery, "is_gallery", n),
            sequence=sequence_codes(sequence, n),
            row_ids=torch.arange(n) if row_ids is None else _int_column(row_ids, "row_ids", n),
            categories=None if categories is None else _str_column(categories, "categories", n),
            paths=None if paths is None else _str_column(paths, "paths", n),
        )
        if not bool(qg.is_query.any()):
            raise EmbedlabError("query/gallery: no query items ('is_query' is never True)")
        if not bool(qg.is_gallery.any()):
            raise EmbedlabError("query/gallery: no gallery items ('is_gallery' is never True)")
        return qg

    @classmethod
    def from_items(cls, embeddings: np.ndarray, items: Any) -> QueryGallery:
        """The validation rows of the embed stage's store (``items.parquet`` + embeddings),
        as validate builds them from the manifest: same roles, sequences and categories.

        >>> import pandas as pd
        >>> items = pd.DataFrame({"row_id": [5, 6, 7], "path": list("abc"), "label": [0, 0, 1],
        ...                       "split": ["train", "validation", "validation"]})
        >>> qg = QueryGallery.from_items(np.eye(3, dtype=np.float32), items)
        >>> qg.row_ids.tolist(), qg.paths
        ([6, 7], ['b', 'c'])
        """
        if len(embeddings) != len(items):
            raise EmbedlabError(
                f"data/embeddings: {len(embeddings)} embeddings for {len(items)} items"
            )
        rows = (items["split"].astype(str) == "validation").to_numpy()
        if not rows.any():
            raise EmbedlabError("data/embeddings: no validation rows to search")
        part = items[rows]

        def flags(name: str) -> Any:  # a column that held NaN on train rows is object-typed
            return part[name].astype(bool).to_numpy() if name in part else None

        return cls.from_columns(
            np.ascontiguousarray(embeddings[rows], dtype=np.float32),
            part["label"].to_numpy(np.int64),
            is_query=flags("is_query"),
            is_gallery=flags("is_gallery"),
            sequence=None if "sequence" not in part else part["sequence"].fillna("").tolist(),
            row_ids=part["row_id"].to_numpy(np.int64),
            categories=None if "category" not in part else part["category"].fillna("").tolist(),
            paths=part["path"].astype(str).tolist(),
        )

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def query_positions(self) -> Tensor:
        """``[Q]`` positions of the queries, ascending."""
        return torch.nonzero(self.is_query).squeeze(1)

    @property
    def gallery_positions(self) -> Tensor:
        """``[G]`` positions of the gallery items, ascending."""
        return torch.nonzero(self.is_gallery).squeeze(1)

    def rows(self, positions: Tensor) -> Tensor:
        """``embeddings[positions]``, without a copy (the same tensor) when it is every row.

        Keeping the same tensor lets :func:`~embedlab.retrieval.knn.knn` see that the
        queries are the gallery and take its symmetric path.
        """
        if positions.numel() == len(self):
            return self.embeddings  # positions come from nonzero(): all rows means 0..N-1
        return self.embeddings[positions]


def factorize(values: Sequence[object] | Tensor) -> tuple[Tensor, list[str]]:
    """Integer codes for a column of category-like values, and the sorted names.

    Values are compared as strings (``3`` and ``"3"`` are one category).

    Example:
        >>> factorize(["b", "a", "b", ""])
        (tensor([2, 1, 2, 0]), ['', 'a', 'b'])
    """
    raw = values.tolist() if isinstance(values, Tensor) else list(values)
    as_text = np.asarray([str(v) for v in raw], dtype=object)
    if as_text.size == 0:
        return torch.zeros(0, dtype=torch.int64), []
    names, codes = np.unique(as_text.astype(str), return_inverse=True)
    return torch.from_numpy(codes.astype(np.int64)), [str(n) for n in names]


def sequence_codes(value: Any, n_items: int) -> Tensor:
    """Integer codes for sequence ids; None, "", and negative numbers mean "no sequence".

    >>> sequence_codes(["x", "", "y", "x"], 4).tolist()
    [1, -1, 2, 1]
    >>> sequence_codes(None, 2).tolist()
    [-1, -1]
    """
    if value is None:
        return torch.full((n_items,), NO_SEQUENCE, dtype=torch.int64)
    raw = value.tolist() if isinstance(value, (Tensor, np.ndarray)) else list(value)
    if len(raw) != n_items:
        raise EmbedlabError(f"'sequence' has {len(raw)} entries, expected {n_items} (one per item)")
    has_sequence = torch.tensor(
        [not (v is None or v == "" or (isinstance(v, (int, float)) and v < 0)) for v in raw],
        dtype=torch.bool,
    )
    codes, _ = factorize(raw)
    return torch.where(has_sequence, codes, NO_SEQUENCE)


def _float_matrix(value: Any) -> Tensor:
    try:
        x = value if isinstance(value, Tensor) else torch.as_tensor(np.asarray(value))
    except (TypeError, ValueError) as error:
        raise EmbedlabError(f"'embeddings' is not numeric: {error}") from None
    if x.ndim != 2:
        raise EmbedlabError(f"'embeddings' must be [items, dim], got {tuple(x.shape)}")
    x = x.detach().to("cpu", torch.float32)
    finite = torch.isfinite(x).all(dim=1)
    if not bool(finite.all()):
        raise EmbedlabError(
            f"'embeddings': {int((~finite).sum())} of {len(finite)} embeddings hold NaN or inf "
            "(the model diverged; lower train.optimizer.lr)"
        )
    return x


def _int_column(value: Any, key: str, n: int) -> Tensor:
    try:
        tensor = torch.as_tensor(np.array(value) if not isinstance(value, Tensor) else value)
    except (TypeError, ValueError, RuntimeError):
        raise EmbedlabError(f"{key!r} must hold integers") from None
    if tensor.is_floating_point() or tensor.is_complex() or tensor.ndim != 1:
        raise EmbedlabError(f"{key!r} must be a 1-d column of integers, got {tensor.dtype}")
    if tensor.shape[0] != n:
        raise EmbedlabError(f"{key!r} has {tensor.shape[0]} entries, expected {n} (one per item)")
    return tensor.to(torch.int64)


def _bool_column(value: Any, key: str, n: int) -> Tensor:
    if value is None:
        return torch.ones(n, dtype=torch.bool)
    tensor = torch.as_tensor(np.array(value) if not isinstance(value, Tensor) else value)
    if tensor.ndim != 1 or tensor.shape[0] != n:
        raise EmbedlabError(f"{key!r} must be one flag per item ({n}), got {tuple(tensor.shape)}")
    return tensor.to(torch.bool)


def _str_column(value: Any, key: str, n: int) -> list[str]:
    raw = value.tolist() if isinstance(value, (Tensor, np.ndarray)) else list(value)
    if len(raw) != n:
        raise EmbedlabError(f"{key!r} has {len(raw)} entries, expected {n} (one per item)")
    return ["" if v is None else str(v) for v in raw]
