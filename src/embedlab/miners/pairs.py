"""Pair indices: the currency of the pair losses and the pair miners.

A *pairs* tuple ``(a1, p, a2, n)`` lists positive pairs ``(a1[i], p[i])`` and negative pairs
``(a2[j], n[j])``: row indices of the anchors in the batch and column indices into the
reference set (the batch itself, or a memory bank). Conversions follow
pytorch-metric-learning (PML) exactly, so a loss fed the same pairs gives PML's value.
"""

from __future__ import annotations

from abc import abstractmethod

import torch
from torch import Tensor

from embedlab.miners.triplets import Miner, Triplets

Pairs = tuple[Tensor, Tensor, Tensor, Tensor]


def all_pairs(labels: Tensor, ref_labels: Tensor | None = None) -> Pairs:
    """Every positive and negative pair between ``labels`` and ``ref_labels``.

    Without ``ref_labels`` the batch is its own reference and an item is never its own
    positive (PML's ``get_all_pairs_indices``).

    >>> a1, p, a2, n = all_pairs(torch.tensor([0, 0, 1]))
    >>> a1.tolist(), p.tolist(), a2.tolist(), n.tolist()
    ([0, 1], [1, 0], [0, 1, 2, 2], [2, 2, 0, 1])
    """
    same_batch = ref_labels is None
    ref = labels if ref_labels is None else ref_labels
    matches = labels[:, None] == ref[None, :]
    diffs = ~matches
    if same_batch:
        matches.fill_diagonal_(False)
    a1, p = torch.where(matches)
    a2, n = torch.where(diffs)
    return a1, p, a2, n


def triplets_to_pairs(triplets: Triplets) -> Pairs:
    """``(a, p, n) -> (a, p, a, n)``: the pairs inside the triplets (PML's ``convert_to_pairs``).

    >>> triplets = torch.tensor([0]), torch.tensor([1]), torch.tensor([2])
    >>> [t.tolist() for t in triplets_to_pairs(triplets)]
    [[0], [1], [0], [2]]
    """
    anchors, positives, negatives = triplets
    return anchors, positives, anchors, negatives


def pairs_to_triplets(pairs: Pairs) -> Triplets:
    """Every ``(a, p, n)`` whose positive and negative pair share the anchor (PML's
    ``convert_to_triplets``).

    >>> a1, p = torch.tensor([0, 1]), torch.tensor([1, 0])
    >>> a2, n = torch.tensor([0, 0]), torch.tensor([2, 3])
    >>> [t.tolist() for t in pairs_to_triplets((a1, p, a2, n))]
    [[0, 0], [1, 1], [2, 3]]
    """
    a1, p, a2, n = pairs
    pos_idx, neg_idx = torch.where(a1[:, None] == a2[None, :])
    return a1[pos_idx], p[pos_idx], n[neg_idx]


def drop_self_pairs(pairs: Pairs, slots: Tensor) -> Pairs:
    """Drop the positive pairs of an anchor with its own copy in a reference bank.

    ``slots[i]`` is the reference index that holds batch row ``i`` (PML's
    ``remove_self_comparisons``: negative pairs are kept, a copy never has another label).
    A slot of -1 (a row not in the bank) drops nothing.

    >>> pairs = (torch.tensor([0, 0]), torch.tensor([5, 6]), torch.tensor([0]), torch.tensor([7]))
    >>> [t.tolist() for t in drop_self_pairs(pairs, slots=torch.tensor([5]))]
    [[0], [6], [0], [7]]
    """
    a1, p, a2, n = pairs
    keep = p != slots[a1]
    return a1[keep], p[keep], a2, n


class PairMiner(Miner):
    """A miner whose natural output is pairs; its triplets are the pairs joined by anchor.

    ``mine(features, labels, ref_features, ref_labels)`` may mine against a reference set
    (a memory bank); :meth:`sample` gives triplets within the batch, so a pair miner also
    serves :class:`~embedlab.losses.TripletLossWithMiner`.
    """

    @abstractmethod
    def mine(
        self,
        features: Tensor,
        labels: Tensor,
        ref_features: Tensor | None = None,
        ref_labels: Tensor | None = None,
    ) -> Pairs:
        """Return ``(a1, p, a2, n)``: anchors index ``features``, p and n the reference set."""

    def sample(self, features: Tensor, labels: Tensor) -> Triplets:
        """Triplets of the batch: the mined pairs joined on their anchor."""
        return pairs_to_triplets(self.mine(features, labels))
