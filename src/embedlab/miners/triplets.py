"""Triplet miners: pick (anchor, positive, negative) index triplets from a labelled batch.

Both miners follow the semantics of open-metric-learning (OML): a positive shares the
anchor's label and is a different item of the batch, a negative has another label.
They are vectorised (masks, sorting, ``searchsorted``), never loop over the batch in Python.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import Tensor

from embedlab.errors import EmbedlabError
from embedlab.retrieval.distance import pairwise_dist

Triplets = tuple[Tensor, Tensor, Tensor]

# Above this many candidate triplets per requested one, drawing a full permutation would
# waste memory (B=1024 with 32x32 balanced batches has ~31M triplets); draw ids instead.
_PERMUTATION_RATIO = 8


class Miner(ABC):
    """Triplet miner interface: ``sample(features, labels) -> (anchors, positives, negatives)``.

    Each returned tensor is a 1-D ``LongTensor`` of row indices into ``features``, all three of
    the same length (possibly zero), on the device of ``labels``.
    """

    @abstractmethod
    def sample(self, features: Tensor, labels: Tensor) -> Triplets:
        """Return index tensors ``(anchors, positives, negatives)`` for the batch."""


def check_batch(
    features: Tensor, labels: Tensor, where: str = "miner", noun: str = "feature"
) -> Tensor:
    """Validate shapes and return labels as a 1-D tensor on the features' device (the
    losses' check too, with their own ``where`` and ``noun``)."""
    if features.ndim != 2:
        raise EmbedlabError(
            f"{where}: expected {noun}s of shape [batch, dim], got {tuple(features.shape)}"
        )
    labels = torch.as_tensor(labels, device=features.device).reshape(-1)
    if labels.numel() != features.shape[0]:
        raise EmbedlabError(
            f"{where}: got {features.shape[0]} {noun} rows but {labels.numel()} labels"
        )
    return labels


def _positive_negative_masks(labels: Tensor) -> tuple[Tensor, Tensor]:
    """``is_pos[a, p]``: same label and ``a != p``; ``is_neg[a, n]``: different label."""
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(labels.numel(), dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same


def _draw_without_replacement(
    total: int, k: int, device: torch.device, generator: torch.Generator | None
) -> Tensor:
    """Uniformly random ``k`` distinct integers from ``range(total)`` (``k <= total``)."""
    if total <= _PERMUTATION_RATIO * k:
        return torch.randperm(total, device=device, generator=generator)[:k]
    # Sparse regime: iid draws collide rarely; keep the distinct ones until we have enough,
    # then a random k-subset of them is a uniform k-subset of range(total) by exchangeability.
    chosen = torch.empty(0, dtype=torch.long, device=device)
    while chosen.numel() < k:
        draws = torch.randint(total, (2 * k,), device=device, generator=generator)
        chosen = torch.unique(torch.cat([chosen, draws]))
    keep = torch.randperm(chosen.numel(), device=device, generator=generator)[:k]
    return chosen[keep]


class AllTripletsMiner(Miner):
    """Every valid triplet of the batch, or a uniform random subset of them above a cap.

    A triplet ``(a, p, n)`` is valid when ``labels[a] == labels[p]``, ``a != p`` and
    ``labels[n] != labels[a]``. Triplets come out in lexicographic ``(a, p, n)`` order; when
    there are more than ``max_output_triplets`` a uniform random subset (still sorted) is
    returned, drawn from ``generator`` or, when it is ``None``, from torch's default generator
    of the labels' device, so ``torch.manual_seed`` makes the draw reproducible.

    The full ``B x B x B`` mask is never built: triplets are numbered anchor by anchor and only
    the chosen numbers are decoded, so memory is ``O(B^2 + triplets returned)``.

    Args:
        max_output_triplets: the most triplets returned per batch (must be positive).
        generator: optional torch generator for the random subset.

    Example:
        >>> miner = AllTripletsMiner()
        >>> feats = torch.tensor([[0.0], [1.0], [3.0], [6.0]])
        >>> a, p, n = miner.sample(feats, torch.tensor([0, 0, 1, 1]))
        >>> list(zip(a.tolist(), p.tolist(), n.tolist()))[:3]
        [(0, 1, 2), (0, 1, 3), (1, 0, 2)]
        >>> len(a)
        8
        >>> capped = AllTripletsMiner(max_output_triplets=5)
        >>> len(capped.sample(feats, torch.tensor([0, 0, 1, 1]))[0])
        5
    """

    def __init__(
        self, max_output_triplets: int = 10_000, generator: torch.Generator | None = None
    ) -> None:
        if max_output_triplets < 1:
            raise EmbedlabError(
                f"max_output_triplets must be a positive integer, got {max_output_triplets}"
            )
        self.max_output_triplets = int(max_output_triplets)
        self.generator = generator

    def __repr__(self) -> str:
        return f"AllTripletsMiner(max_output_triplets={self.max_output_triplets})"

    def sample(self, features: Tensor, labels: Tensor) -> Triplets:
        """Return ``(anchors, positives, negatives)`` index tensors; see the class docstring."""
        labels = check_batch(features, labels)
        device = labels.device
        is_pos, is_neg = _positive_negative_masks(labels)
        n_pos = is_pos.sum(dim=1)
        n_neg = is_neg.sum(dim=1)
        per_anchor = n_pos * n_neg
        total = int(per_anchor.sum())
        if total == 0:
            empty = torch.empty(0, dtype=torch.long, device=device)
            return empty, empty.clone(), empty.clone()

        if total <= self.max_output_triplets:
            ids = torch.arange(total, device=device)
        else:
            ids = _draw_without_replacement(total, self.max_output_triplets, device, self.generator)
            ids = torch.sort(ids).values

        # Triplet number t belongs to the anchor whose [start, end) range holds it; within the
        # anchor, it is the (t // n_neg)-th positive and (t % n_neg)-th negative, both ascending.
        ends = torch.cumsum(per_anchor, dim=0)
        anchors = torch.searchsorted(ends, ids, right=True)
        offset = ids - (ends[anchors] - per_anchor[anchors])
        anchor_n_neg = n_neg[anchors]
        pos_rank = torch.div(offset, anchor_n_neg, rounding_mode="floor")
        neg_rank = offset - pos_rank * anchor_n_neg
        # A stable sort on "is not positive" lists each row's positives first, by index.
        pos_order = torch.sort((~is_pos).to(torch.int8), dim=1, stable=True).indices
        neg_order = torch.sort((~is_neg).to(torch.int8), dim=1, stable=True).indices
        positives = pos_order[anchors, pos_rank]
        negatives = neg_order[anchors, neg_rank]
        return anchors, positives, negatives


class HardTripletsMiner(Miner):
    """Batch-hard mining (Hermans et al., 2017): one triplet per anchor.

    For each anchor that has at least one positive and one negative in the batch, the positive
    is the farthest same-label item and the negative the nearest other-label item, by Euclidean
    distance on detached features. Ties go to the lowest index.

    Example:
        >>> feats = torch.tensor([[0.0], [1.0], [3.0], [6.0]])
        >>> a, p, n = HardTripletsMiner().sample(feats, torch.tensor([0, 0, 1, 1]))
        >>> a.tolist(), p.tolist(), n.tolist()
        ([0, 1, 2, 3], [1, 0, 3, 2], [2, 2, 1, 1])
    """

    def __repr__(self) -> str:
        return "HardTripletsMiner()"

    def sample(self, features: Tensor, labels: Tensor) -> Triplets:
        """Return ``(anchors, positives, negatives)`` index tensors; see the class docstring."""
        labels = check_batch(features, labels)
        is_pos, is_neg = _positive_negative_masks(labels)
        with torch.no_grad():
            feats = features.detach().float()
            dist = pairwise_dist(feats, feats, exact=True)
        hardest_pos = dist.masked_fill(~is_pos, float("-inf")).argmax(dim=1)
        hardest_neg = dist.masked_fill(~is_neg, float("inf")).argmin(dim=1)
        anchors = torch.nonzero(is_pos.any(dim=1) & is_neg.any(dim=1)).reshape(-1)
        return anchors, hardest_pos[anchors], hardest_neg[anchors]


def build_miner(name: str, **kwargs: Any) -> Miner:
    """Build a miner from its name in :data:`embedlab.registries.MINERS` and its arguments.

    A ``pml.*`` name builds that pytorch-metric-learning miner (collecting its statistics)
    inside a :class:`~embedlab.miners.pml.PmlMiner`.

    Example:
        >>> build_miner("all", max_output_triplets=100)
        AllTripletsMiner(max_output_triplets=100)
        >>> build_miner("pml.TripletMarginMiner", margin=0.1).miner.margin
        0.1
        >>> build_miner("semihard")
        Traceback (most recent call last):
        ...
        embedlab.errors.EmbedlabError: params.yaml: train.miner.name: unknown miner 'semihard' ...
    """
    from embedlab.miners.pml import PmlMiner
    from embedlab.registries import MINERS, PML_PREFIX

    if name.startswith(PML_PREFIX):
        return PmlMiner(MINERS.build(name, **{"collect_stats": True, **kwargs}))
    return MINERS.build(name, **kwargs)
