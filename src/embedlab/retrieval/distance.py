"""Pairwise distances: the one distance of the library, and its matrix-product form.

``euclidean`` is :math:`\\|a-b\\|_2` and ``cosine`` is :math:`1-\\cos(a, b)` everywhere:
in the losses, the miners, :func:`~embedlab.retrieval.knn.knn` and the indexes.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from embedlab.errors import EmbedlabError

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "METRICS",
    "Metric",
    "augment",
    "auto_chunk_size",
    "check_metric",
    "pairwise_dist",
]

Metric = Literal["euclidean", "cosine"]
METRICS: tuple[str, ...] = ("euclidean", "cosine")

#: Memory budget for one chunk's ``chunk x gallery`` float32 distance block.
DEFAULT_CHUNK_BYTES = 256 * 2**20


def pairwise_dist(
    x1: Tensor,
    x2: Tensor,
    metric: Metric = "euclidean",
    *,
    exact: bool = False,
    paired: bool = False,
    squared: bool = False,
) -> Tensor:
    """Distances between the rows of ``x1`` and ``x2``: the one distance of the library.

    Losses, miners, the chunked :func:`knn` and the indexes all measure with it, so
    ``euclidean`` (:math:`\\|a-b\\|_2`) and ``cosine`` (:math:`1-\\cos(a, b)`) mean the
    same everywhere.

    Args:
        x1: ``[N, D]`` tensor.
        x2: ``[M, D]`` tensor (``[N, D]`` with ``paired``).
        metric: ``"euclidean"`` or ``"cosine"``.
        exact: compute each distance from the difference vector (``vector_norm(a - b)``)
            instead of one matrix product. Exact for near-identical rows, where the
            product form loses digits to cancellation, but it holds ``N x M x D`` values:
            meant for batches (miners), not for search.
        paired: row ``i`` of ``x1`` against row ``i`` of ``x2`` only; returns ``[N]``
            (always exact: no matrix product to save).
        squared: squared euclidean distances (what top-k search ranks by).

    Returns:
        ``[N, M]`` distances (``[N]`` with ``paired``). The product form clamps round-off
        at 0 and has a zero (not NaN) gradient where a distance is 0, so it is safe
        inside a loss.

    Example:
        >>> a = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
        >>> pairwise_dist(a, a)
        tensor([[0., 5.],
                [5., 0.]])
        >>> pairwise_dist(a, a.flip(0), paired=True)
        tensor([5., 5.])
        >>> pairwise_dist(a, torch.tensor([[1.0, 0.0]]), metric="cosine")
        tensor([[1.0000],
                [0.4000]])
    """
    check_metric(metric, "pairwise_dist")
    if x1.ndim != 2 or x2.ndim != 2 or x1.shape[1] != x2.shape[1]:
        raise EmbedlabError(
            f"pairwise_dist: expected [N, D] and [M, D] tensors, got {tuple(x1.shape)} "
            f"and {tuple(x2.shape)}"
        )
    if paired or exact:
        if paired and x1.shape != x2.shape:
            raise EmbedlabError(
                f"pairwise_dist(paired=True): shapes differ, {tuple(x1.shape)} and "
                f"{tuple(x2.shape)}"
            )
        a, b = (x1, x2) if paired else (x1[:, None, :], x2[None, :, :])
        if metric == "cosine":
            return 1 - F.cosine_similarity(a, b, dim=-1)
        dist = torch.linalg.vector_norm(a - b, dim=-1)
        return dist.square() if squared else dist
    block = augment(x1, metric, side="query") @ augment(x2, metric, side="gallery").T
    if metric == "cosine":
        return block
    positive = block > 0
    if squared:
        return block * positive
    # sqrt'(0) is infinite: feed 1 where the distance is 0 and mask it out, so the
    # gradient there is exactly 0 instead of NaN.
    return torch.where(positive, block, torch.ones_like(block)).sqrt() * positive


def check_metric(metric: str, where: str) -> None:
    """One-line error unless ``metric`` is a known distance.

    >>> check_metric("cosine", "knn")
    """
    if metric not in METRICS:
        raise EmbedlabError(f"{where}: metric must be one of {METRICS}, got {metric!r}")


def auto_chunk_size(n_gallery: int, budget_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """Number of query rows whose float32 distance block to the gallery fits the budget.

    Example:
        >>> auto_chunk_size(100_000)
        671
        >>> auto_chunk_size(10**12)
        1
    """
    return max(1, budget_bytes // (4 * max(1, n_gallery)))


def augment(x: Tensor, metric: str, *, side: Literal["query", "gallery"]) -> Tensor:
    """Append columns so that ``augment(q, "query") @ augment(g, "gallery").T`` is the distance.

    Euclidean: ``[q, |q|^2, 1] . [-2g, 1, |g|^2] = |q - g|^2`` (squared).
    Cosine: ``[q/|q|, 1] . [-g/|g|, 1] = 1 - cos(q, g)``.
    The matrix-product form of :func:`pairwise_dist`; ``knn`` and the exact index
    augment their gallery once and reuse it for every block of queries.

    >>> g = augment(torch.tensor([[3.0, 4.0]]), "euclidean", side="gallery")
    >>> augment(torch.zeros(1, 2), "euclidean", side="query") @ g.T
    tensor([[25.]])
    """
    ones = torch.ones(x.shape[0], 1, device=x.device, dtype=x.dtype)
    if metric == "cosine":
        x = F.normalize(x, dim=1)
        return torch.cat([x if side == "query" else -x, ones], dim=1)
    norm = x.pow(2).sum(dim=1, keepdim=True)
    if side == "query":
        return torch.cat([x, norm, ones], dim=1)
    return torch.cat([-2 * x, ones, norm], dim=1)
