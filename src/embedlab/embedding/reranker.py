"""The learned re-ranker as a post-processor: re-order each query's top-N by a pairwise model.

OML's ``PairwiseReranker`` role, in the post-processing slot of
:mod:`embedlab.retrieval.postprocess` (an object with ``name``, ``candidates`` and
``__call__(results) -> results``). Only the first N neighbours of each query move (N
clipped to what the results hold); everything past N keeps its order and its distance.
The re-ranked items get distances in the band between the query's first original
distance and its (N+1)-th, ``d_1 + (d_{N+1} - d_1) * p`` with ``p`` the model's
distance in ``(0, 1)``, so every row stays sorted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from embedlab.data import keys
from embedlab.data.datasets import DatasetWithLabels, InferenceImages
from embedlab.errors import EmbedlabError
from embedlab.models.pairwise import PairwiseModel
from embedlab.retrieval.results import RetrievalResults

__all__ = ["ImageBatch", "PairwiseReranker", "dataset_images", "rerank_top_n"]

ImageBatch = Callable[[Tensor], Tensor]
"""Positions of the query/gallery items -> their preprocessed images ``[B, 3, H, W]``."""


def dataset_images(dataset: DatasetWithLabels) -> ImageBatch:
    """Preprocessed images of dataset rows (the dataset's transform, as the extractor saw them).

    >>> import tempfile, pathlib, pandas as pd
    >>> from PIL import Image
    >>> from embedlab.data.transforms import eval_transform
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for name in ("a.png", "b.png"):
    ...     Image.new("RGB", (4, 4)).save(root / name)
    >>> pre = {"input_size": [3, 8, 8], "mean": [0.5] * 3, "std": [0.5] * 3}
    >>> ds = DatasetWithLabels(pd.DataFrame({"label": [0, 1], "path": ["a.png", "b.png"]}),
    ...                        root, eval_transform(pre))
    >>> dataset_images(ds)(torch.tensor([1, 0, 1])).shape
    torch.Size([3, 3, 8, 8])
    """
    view = InferenceImages(dataset)

    def load(positions: Tensor) -> Tensor:
        batch = torch.stack([view[int(i)][keys.INPUT] for i in positions.tolist()])
        return view.batch_transform(batch)

    return load


@dataclass(eq=False)
class PairwiseReranker:
    """Re-rank each query's top ``top_n`` with a :class:`PairwiseModel`.

    Args:
        model: the trained pairwise model (eval mode is set here).
        images: preprocessed images of query/gallery positions (:func:`dataset_images`).
        top_n: candidates re-ranked per query, clipped to the results' width.
        batch_size: images (``stacked``: pairs) per backbone pass.
        distance_weight: 0 orders the top-N by the model's distance alone (OML's
            ``PairwiseReranker``); ``w`` in (0, 1] by ``(1 - w) * p + w * r``, ``r`` the
            extractor's distance rescaled to [0, 1] over the band (:func:`rerank_top_n`);
            None: the model's own (``rerank.distance_weight`` when it was trained).

    Example:
        >>> from embedlab.models import TimmExtractor
        >>> from embedlab.retrieval import QueryGallery, retrieve
        >>> model = PairwiseModel.from_extractor(TimmExtractor("resnet10t", input_size=8), 4)
        >>> pixels = torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(0))
        >>> qg = QueryGallery.from_columns(torch.arange(5.0)[:, None], [0, 0, 1, 1, 1])
        >>> plain = retrieve(qg, k=4)
        >>> reranked = PairwiseReranker(model, lambda p: pixels[p], top_n=2)(plain)
        >>> torch.equal(reranked.retrieved[:, 2:], plain.retrieved[:, 2:])
        True
        >>> bool((reranked.distances.diff(dim=1) >= 0).all())
        True
    """

    model: PairwiseModel
    images: ImageBatch
    top_n: int = 5
    batch_size: int = 256
    distance_weight: float | None = None
    name: str = "pairwise"

    def __post_init__(self) -> None:
        if self.top_n < 1 or self.batch_size < 1:
            raise EmbedlabError(
                f"pairwise re-ranker: top_n and batch_size must be >= 1, got {self.top_n}, "
                f"{self.batch_size}"
            )
        if self.distance_weight is None:
            self.distance_weight = float(getattr(self.model, "distance_weight", 0.0))
        if not 0.0 <= self.distance_weight <= 1.0:
            raise EmbedlabError(
                f"pairwise re-ranker: distance_weight must be in [0, 1], got {self.distance_weight}"
            )

    @property
    def candidates(self) -> int:
        """The top-N and one more: the (N+1)-th distance bounds the re-ranked band."""
        return self.top_n + 1

    @torch.inference_mode()
    def pair_distances(self, results: RetrievalResults, n: int) -> Tensor:
        """``[Q, n]`` model distances of each query and its first ``n`` items (inf: padding)."""
        self.model.eval()
        head = results.retrieved[:, :n]
        found = head >= 0
        anchors = results.query_positions[:, None].expand_as(head)[found]
        logits = self.model.pair_logits(self.images, anchors, head[found], self.batch_size)
        scores = torch.full(head.shape, torch.inf)
        scores[found] = torch.sigmoid(logits).float().cpu()
        return scores

    def __call__(self, results: RetrievalResults) -> RetrievalResults:
        n = min(self.top_n, results.width)
        distances, retrieved = rerank_top_n(
            results.distances,
            results.retrieved,
            self.pair_distances(results, n),
            distance_weight=self.distance_weight,
        )
        return results.with_ranking(distances, retrieved)


def rerank_top_n(
    distances: Tensor, retrieved: Tensor, scores: Tensor, distance_weight: float = 0.0
) -> tuple[Tensor, Tensor]:
    """Re-order the first ``n = scores.shape[1]`` columns of each row by ``scores``.

    Args:
        distances: ``[Q, K]`` ascending per row (``inf``: padding), ``K >= n``.
        retrieved: ``[Q, K]`` item positions (``-1``: padding).
        scores: ``[Q, n]`` the pairwise distances in ``[0, 1]`` (``inf`` where padding).
        distance_weight: ``w``: the order is by ``(1 - w) * score + w * r`` with ``r`` the
            extractor's distance rescaled to [0, 1] over the band, ``(d - d_1) / (d_{n+1}
            - d_1)``; 0 (the default) is the model's score alone, 1 the plain order.

    Returns:
        ``(distances, retrieved)``: columns past ``n`` unchanged; the first ``n`` sorted
        by the (fused) score (ties keep their order), with distances ``d_1 + (d_{n+1} -
        d_1) * score`` (``d_{n+1}``: the largest of the first n when there is no (n+1)-th),
        so rows stay sorted.

    Example:
        >>> d = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
        >>> r = torch.tensor([[7, 8, 9, 5]])
        >>> rerank_top_n(d, r, torch.tensor([[0.9, 0.5, 0.1]]))
        (tensor([[1.3000, 2.5000, 3.7000, 4.0000]]), tensor([[9, 8, 7, 5]]))
        >>> rerank_top_n(d, r, torch.tensor([[0.9, 0.5, 0.1]]), distance_weight=0.8)[1]
        tensor([[7, 8, 9, 5]])
    """
    n = scores.shape[1]
    found = retrieved[:, :n] >= 0
    upper = torch.where(found, distances[:, :n], -torch.inf).max(dim=1).values
    if distances.shape[1] > n:  # the (N+1)-th distance, where there is one
        after = distances[:, n]
        upper = torch.where(torch.isfinite(after), after, upper)
    lower = distances[:, 0]
    if distance_weight > 0.0:
        span = (upper - lower).clamp(min=torch.finfo(distances.dtype).tiny)[:, None]
        rescaled = ((distances[:, :n] - lower[:, None]) / span).clamp(0.0, 1.0)
        fused = (1.0 - distance_weight) * scores.clamp(0.0, 1.0) + distance_weight * rescaled
        scores = torch.where(found, fused, torch.inf)
    order = torch.sort(scores, dim=1, stable=True).indices  # ties keep the old order
    head = torch.gather(retrieved[:, :n], 1, order)
    sorted_scores = torch.gather(scores, 1, order)
    found = head >= 0
    band = lower[:, None] + (upper - lower)[:, None] * sorted_scores.clamp(0.0, 1.0)
    band = torch.minimum(band, upper[:, None])
    new_head = torch.where(found, band, torch.inf).to(distances.dtype)
    return torch.cat([new_head, distances[:, n:]], dim=1), torch.cat([head, retrieved[:, n:]], 1)
