"""Pairs for the pairwise re-ranker, mined from an extractor's own nearest neighbours.

The re-ranker only ever sees a query's top-N, so it is trained on what a top-N holds:
for every anchor, each right-label item among its ``top_n`` nearest neighbours (a
positive pair) and its ``hard_negatives`` nearest wrong-label items (the negatives the
extractor confuses most). Mine them on the train split only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from embedlab.errors import EmbedlabError
from embedlab.retrieval.distance import Metric
from embedlab.retrieval.knn import knn
from embedlab.retrieval.query_gallery import sequence_codes

__all__ = ["NeighbourPairs", "mine_neighbour_pairs"]


@dataclass(frozen=True)
class NeighbourPairs:
    """Mined pairs: ``anchors[i]`` and ``others[i]`` are item positions; ``different[i]``
    is True for a wrong-label (negative) pair."""

    anchors: Tensor
    others: Tensor
    different: Tensor

    def __len__(self) -> int:
        return int(self.anchors.numel())

    def sample(self, n: int, seed: int) -> NeighbourPairs:
        """At most ``n`` pairs, a seeded sample (order kept); all of them when fewer.

        >>> p = NeighbourPairs(torch.arange(5), torch.arange(5), torch.zeros(5, dtype=torch.bool))
        >>> p.sample(3, seed=0).anchors.tolist()
        [0, 1, 4]
        """
        if len(self) <= n:
            return self
        keep = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n]
        keep = keep.sort().values
        return NeighbourPairs(self.anchors[keep], self.others[keep], self.different[keep])


def mine_neighbour_pairs(
    embeddings: Tensor,
    labels: Tensor,
    top_n: int,
    hard_negatives: int,
    *,
    metric: Metric = "euclidean",
    chunk_size: int | None = None,
    sequence: Tensor | None = None,
) -> NeighbourPairs:
    """Every positive among each item's ``top_n`` neighbours, and its hardest negatives.

    Each item is an anchor against all the others (never itself), and, as validation
    ranks them, never against items of its own sequence: the top-N that pairs come from
    is the one the re-ranker will see.

    Args:
        embeddings: ``[N, D]`` the extractor's embeddings of the train items.
        labels: ``[N]`` their labels.
        top_n: neighbours whose positives become pairs.
        hard_negatives: nearest wrong-label items per anchor, wherever they rank.
        sequence: ``[N]`` sequence codes (``-1``: none, :func:`sequence_codes`); items
            sharing a code ``>= 0`` are never paired.

    Example:
        >>> x = torch.tensor([[0.0], [0.1], [0.2], [1.0]])
        >>> p = mine_neighbour_pairs(x, torch.tensor([0, 0, 1, 1]), top_n=1, hard_negatives=1)
        >>> list(zip(p.anchors.tolist(), p.others.tolist(), p.different.tolist()))
        ... # doctest: +NORMALIZE_WHITESPACE
        [(0, 1, False), (0, 2, True), (1, 0, False), (1, 2, True), (2, 1, True), (3, 2, False),
         (3, 1, True)]
    """
    if top_n < 1 or hard_negatives < 0:
        raise EmbedlabError(
            f"rerank: top_n must be >= 1 and hard_negatives >= 0, got {top_n}, {hard_negatives}"
        )
    labels = torch.as_tensor(labels, dtype=torch.int64)
    if embeddings.shape[0] != labels.numel():
        raise EmbedlabError(f"rerank: {embeddings.shape[0]} embeddings for {labels.numel()} labels")
    ids = torch.arange(labels.numel())
    search = {"metric": metric, "chunk_size": chunk_size, "query_ids": ids, "gallery_ids": ids}
    codes = sequence_codes(None, labels.numel()) if sequence is None else sequence
    if codes.numel() != labels.numel():
        raise EmbedlabError(f"rerank: {codes.numel()} sequence codes for {labels.numel()} labels")
    _, near = knn(
        embeddings, embeddings, top_n, query_sequence=codes, gallery_sequence=codes, **search,  # type: ignore[arg-type]
    )  # fmt: skip
    positive = (near >= 0) & (labels[near.clamp(min=0)] == labels[:, None])
    # the nearest wrong-label items: one's own label as the sequence code excludes it
    # (a sequence holds one label, so that also keeps out one's own sequence)
    by_label = labels - labels.min() if labels.numel() else labels
    _, wrong = knn(
        embeddings, embeddings, max(hard_negatives, 1), query_sequence=by_label,
        gallery_sequence=by_label, **search,  # type: ignore[arg-type]
    )  # fmt: skip
    wrong = wrong[:, :hard_negatives]
    negative = wrong >= 0
    anchors, others, flags = [], [], []
    for mask, found, flag in ((positive, near, False), (negative, wrong, True)):
        rows, cols = torch.nonzero(mask, as_tuple=True)
        anchors.append(rows)
        others.append(found[rows, cols])
        flags.append(torch.full_like(rows, int(flag), dtype=torch.bool))
    anchor, other, diff = torch.cat(anchors), torch.cat(others), torch.cat(flags)
    order = torch.sort(anchor, stable=True).indices  # anchor by anchor, positives first
    return NeighbourPairs(anchor[order], other[order], diff[order])
