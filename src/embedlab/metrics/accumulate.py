"""Per-batch accumulation of item columns, for :class:`~embedlab.metrics.EmbeddingMetrics`.

Batches arrive in any order, possibly with items repeated (distributed samplers pad the
last shard); :meth:`BatchColumns.columns` concatenates them, sorts by the index column
and drops its duplicates.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from embedlab.errors import EmbedlabError

__all__ = ["BatchColumns"]


class BatchColumns:
    """Columns of batches: ``update(batch)`` per batch, then ``columns()`` once.

    Args:
        required: keys every batch must carry (the first one holds ``[B, D]`` embeddings).
        optional: keys taken when present (in all batches or none).
        index_key: the item index: sort by it and keep its first occurrence.

    Example:
        >>> acc = BatchColumns(("embeddings", "labels"), (), index_key="idx")
        >>> acc.update({"embeddings": torch.ones(2, 1), "labels": [1, 0], "idx": [1, 0]})
        >>> acc.update({"embeddings": torch.ones(1, 1), "labels": [1], "idx": [1]})
        >>> cols = acc.columns()
        >>> cols["labels"], cols["idx"]
        ([0, 1], [0, 1])
    """

    def __init__(self, required: Sequence[str], optional: Sequence[str], index_key: str) -> None:
        self.required, self.optional, self.index_key = tuple(required), tuple(optional), index_key
        self._parts: dict[str, list[Any]] = {}
        self._n_batches = 0

    def __len__(self) -> int:
        return self._n_batches

    def update(self, batch: Mapping[str, Any]) -> None:
        """Keep a private copy of one batch's columns (tensors, arrays or lists)."""
        main = self.required[0]
        for key in self.required:
            if key not in batch:
                raise EmbedlabError(f"update_data: batch has no key {key!r}")
        embeddings = _as_tensor(batch[main], main)
        if embeddings.ndim != 2:
            raise EmbedlabError(
                f"update_data: {main!r} must be [batch, dim], got {tuple(embeddings.shape)}"
            )
        known = self._parts.get(main)
        if known and known[0].shape[1] != embeddings.shape[1]:
            raise EmbedlabError(
                f"update_data: {main!r} has dim {embeddings.shape[1]}, "
                f"earlier batches {known[0].shape[1]}"
            )
        n_items = embeddings.shape[0]
        values = {main: embeddings.detach().to("cpu", torch.float32, copy=True)}
        for key in (*self.required[1:], self.index_key, *self.optional):
            if key in batch and key not in values:
                values[key] = _copy_column(batch[key], key, n_items)
        for key, value in values.items():
            self._parts.setdefault(key, []).append(value)
        self._n_batches += 1

    def columns(self, expected: int | None = None) -> dict[str, Any]:
        """Every column concatenated, sorted by the index and de-duplicated; the copies
        are freed. Warns when ``expected`` items were announced and another count came."""
        if self._n_batches == 0:
            raise EmbedlabError("compute_metrics: no data; call update_data(batch) first")
        columns = {key: self._concat(key) for key in list(self._parts)}
        self._parts, self._n_batches = {}, 0
        keep = _first_of_each_index(columns.get(self.index_key))
        if keep is not None:
            columns = {key: _take(value, keep) for key, value in columns.items()}
        n_items = columns[self.required[0]].shape[0]
        if expected is not None and n_items != expected:
            warnings.warn(
                f"EmbeddingMetrics expected {expected} samples, got {n_items} "
                "(after dropping duplicated indices)",
                stacklevel=3,
            )
        return columns

    def _concat(self, key: str) -> Tensor | list[Any]:
        parts = self._parts[key]
        if len(parts) != self._n_batches:
            raise EmbedlabError(
                f"key {key!r} is present in {len(parts)} of {self._n_batches} batches; "
                "give it in all batches or none"
            )
        if all(isinstance(p, Tensor) for p in parts):
            return torch.cat(parts)
        return [v for part in parts for v in (part.tolist() if isinstance(part, Tensor) else part)]


def _first_of_each_index(indices: Tensor | list[Any] | None) -> Tensor | None:
    if indices is None:
        return None
    indices = torch.as_tensor(indices, dtype=torch.int64)
    order = torch.sort(indices, stable=True).indices
    sorted_indices = indices[order]
    first = torch.ones_like(sorted_indices, dtype=torch.bool)
    first[1:] = sorted_indices[1:] != sorted_indices[:-1]
    return order[first]


def _take(value: Tensor | list[Any], keep: Tensor) -> Tensor | list[Any]:
    if isinstance(value, Tensor):
        return value[keep]
    return [value[i] for i in keep.tolist()]


def _as_tensor(value: Any, key: str) -> Tensor:
    if isinstance(value, Tensor):
        return value
    try:
        return torch.as_tensor(np.asarray(value))
    except (TypeError, ValueError) as error:
        raise EmbedlabError(f"update_data: {key!r} is not numeric: {error}") from None


def _copy_column(value: Any, key: str, n_items: int) -> Tensor | list[Any]:
    """A private copy of one per-item column: a CPU tensor, or a list for anything else."""
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        value = torch.from_numpy(value)
    if isinstance(value, Tensor):
        if value.ndim == 0 or value.shape[0] != n_items:
            raise EmbedlabError(
                f"update_data: {key!r} has {tuple(value.shape)} entries, "
                f"expected {n_items} (one per item)"
            )
        return value.detach().to("cpu", copy=True)
    items = list(value)
    if len(items) != n_items:
        raise EmbedlabError(
            f"update_data: {key!r} has {len(items)} entries, expected {n_items} (one per item)"
        )
    return items
