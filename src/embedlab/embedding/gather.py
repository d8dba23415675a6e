"""Putting embeddings computed in batches (on one rank or many) back in item order."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from embedlab.data import keys


def gather_batches(batches: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every rank's batches, rank by rank (just ``batches`` outside a process group).

    A collective: every rank must call it. Items repeated by a distributed sampler stay
    repeated; :func:`assemble` writes them to the same row again.

    >>> gather_batches([{"idx": [0]}])
    [{'idx': [0]}]
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return batches
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, batches)
    return [batch for rank_batches in gathered for batch in rank_batches]


def assemble(parts: list[dict[str, Any]], n_items: int, dim: int = 0) -> np.ndarray:
    """One ``[n_items, D]`` float32 array from ``{idx, embeddings}`` parts, row ``i`` = item ``i``.

    Padding repeats (the same item embedded twice by a distributed sampler) write the
    same row again. ``dim`` is the width returned when there are no parts.

    >>> parts = [{"idx": torch.tensor([2, 0]), "embeddings": torch.tensor([[2.0], [0.0]])},
    ...          {"idx": torch.tensor([1, 2]), "embeddings": torch.tensor([[1.0], [2.0]])}]
    >>> assemble(parts, 3).ravel().tolist()
    [0.0, 1.0, 2.0]
    """
    out: np.ndarray | None = None
    for part in parts:
        idx = np.asarray(part[keys.IDX])
        embeddings = part[keys.EMBEDDINGS]
        if isinstance(embeddings, torch.Tensor):
            embeddings = embeddings.detach().float().cpu().numpy()
        if out is None:
            out = np.empty((n_items, embeddings.shape[1]), dtype=np.float32)
        out[idx] = embeddings
    if out is None:
        return np.empty((0, dim), dtype=np.float32)
    return out
