"""Triplet margin loss on mined triplets, with OML's ``TripletLossWithMiner`` interface."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from embedlab.errors import EmbedlabError
from embedlab.miners.pml import miner_logs
from embedlab.miners.triplets import AllTripletsMiner, Miner
from embedlab.retrieval.distance import pairwise_dist

Reduction = Literal["mean", "mean_nonzero", "sum", "none"]
_REDUCTIONS = ("mean", "mean_nonzero", "sum", "none")


class TripletLossWithMiner(nn.Module):
    """Triplet loss over the triplets a miner picks from a labelled batch.

    With Euclidean distances ``d_ap = |f[a] - f[p]|`` and ``d_an = |f[a] - f[n]|`` the per-triplet
    loss is ``relu(d_ap - d_an + margin)``; ``margin=None`` selects the soft margin
    ``softplus(d_ap - d_an) = log(1 + exp(d_ap - d_an))``.

    A batch without any valid triplet (e.g. a single label) gives a zero loss that is still
    connected to ``features``, so ``backward()`` runs (with zero gradients) and DDP does not
    stall waiting for gradients that never come.

    With ``need_logs=True`` every call fills ``last_logs`` with ``pos_dist`` (mean ``d_ap``),
    ``neg_dist`` (mean ``d_an``), ``active_tri`` (fraction of triplets with positive loss; with
    the soft margin this is ~1.0, since softplus is positive) and ``n_triplets`` (and a
    :class:`~embedlab.miners.pml.PmlMiner`'s statistics as ``miner_<stat>``).

    Args:
        margin: hinge margin (``>= 0``), or ``None`` for the soft margin.
        miner: triplet miner; defaults to ``AllTripletsMiner()``.
        reduction: ``"mean"``: over all mined triplets (OML's ``TripletLossWithMiner``);
            ``"mean_nonzero"``: over the triplets with a positive loss, 0 when none is
            (pytorch-metric-learning's ``TripletMarginLoss`` with its default
            ``AvgNonZeroReducer``); ``"sum"``; or ``"none"`` for per-triplet values.
        need_logs: whether to compute ``last_logs`` (costs a device sync per call).

    Example:
        >>> criterion = TripletLossWithMiner(margin=0.1, need_logs=True)
        >>> feats = torch.tensor([[0.0], [1.0], [3.0], [6.0]], requires_grad=True)
        >>> loss = criterion(feats, torch.tensor([0, 0, 1, 1]))
        >>> round(loss.item(), 4)
        0.15
        >>> loss.backward()
        >>> criterion.last_logs
        {'pos_dist': 2.0, 'neg_dist': 4.0, 'active_tri': 0.25, 'n_triplets': 8.0}

        Two of the eight triplets are active (losses 0.1 and 1.1): PML's reduction averages
        those two only.

        >>> nonzero = TripletLossWithMiner(margin=0.1, reduction="mean_nonzero")
        >>> round(nonzero(feats, torch.tensor([0, 0, 1, 1])).item(), 4)
        0.6
    """

    def __init__(
        self,
        margin: float | None = 0.1,
        miner: Miner | None = None,
        reduction: Reduction = "mean",
        need_logs: bool = False,
    ) -> None:
        super().__init__()
        if margin is not None and margin < 0:
            raise EmbedlabError(f"triplet margin must be >= 0 or None (soft margin), got {margin}")
        if reduction not in _REDUCTIONS:
            raise EmbedlabError(
                f"triplet loss reduction must be one of {', '.join(_REDUCTIONS)}, got {reduction!r}"
            )
        self.margin = None if margin is None else float(margin)
        self.miner: Miner = miner if miner is not None else AllTripletsMiner()
        self.reduction: Reduction = reduction
        self.need_logs = need_logs
        self.last_logs: dict[str, float] = {}

    def extra_repr(self) -> str:
        return f"margin={self.margin}, miner={self.miner!r}, reduction={self.reduction!r}"

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        """Mine triplets from ``(features [B, D], labels [B])`` and return the reduced loss."""
        anchors, positives, negatives = self.miner.sample(features, labels)
        if anchors.numel() == 0:
            return self._no_triplets(features)

        anchor_feats = features[anchors]
        pos_dist = pairwise_dist(anchor_feats, features[positives], paired=True)
        neg_dist = pairwise_dist(anchor_feats, features[negatives], paired=True)
        diff = pos_dist - neg_dist
        per_triplet = F.softplus(diff) if self.margin is None else F.relu(diff + self.margin)

        if self.need_logs:
            with torch.no_grad():
                self.last_logs = {
                    "pos_dist": pos_dist.mean().item(),
                    "neg_dist": neg_dist.mean().item(),
                    "active_tri": (per_triplet > 0).float().mean().item(),
                    "n_triplets": float(per_triplet.numel()),
                    **miner_logs(self.miner),  # a pml.* miner's statistics
                }
        if self.reduction == "mean":
            return per_triplet.mean()
        if self.reduction == "mean_nonzero":
            active = per_triplet > 0  # no .item(): no device sync
            return (per_triplet * active).sum() / active.sum().clamp(min=1)
        if self.reduction == "sum":
            return per_triplet.sum()
        return per_triplet

    def _no_triplets(self, features: Tensor) -> Tensor:
        """Zero loss that keeps a graph edge to ``features`` so backward still works."""
        if self.need_logs:
            self.last_logs = {
                "pos_dist": 0.0,
                "neg_dist": 0.0,
                "active_tri": 0.0,
                "n_triplets": 0.0,
                **miner_logs(self.miner),
            }
        # Summing an empty slice is exactly 0 even when features hold inf/NaN.
        empty = features[:0]
        if self.reduction == "none":
            return empty.sum(dim=tuple(range(1, features.ndim)))
        return empty.sum()
