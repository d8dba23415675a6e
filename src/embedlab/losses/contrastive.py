"""Contrastive loss (Hadsell et al., 2006) on pairs, PML's ``ContrastiveLoss``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from embedlab.errors import EmbedlabError
from embedlab.losses.pair_base import PairLoss, zero_loss
from embedlab.miners.pairs import Pairs
from embedlab.miners.triplets import Miner
from embedlab.retrieval.distance import pairwise_dist


def avg_non_zero(losses: Tensor, embeddings: Tensor) -> Tensor:
    """Mean of the positive entries, 0 when there is none (PML's ``AvgNonZeroReducer``).

    >>> avg_non_zero(torch.tensor([0.0, 1.0, 3.0]), torch.zeros(1, 1))
    tensor(2.)
    """
    positive = losses[losses > 0]
    return positive.mean() if positive.numel() else zero_loss(embeddings)


class ContrastiveLoss(PairLoss):
    """Pull positive pairs within ``pos_margin``, push negative pairs beyond ``neg_margin``.

    On L2-normalised embeddings (the loss normalises, as PML's default ``LpDistance``
    does) with Euclidean distance ``d``: positive pairs cost ``relu(d - pos_margin)``,
    negative pairs ``relu(neg_margin - d)``; each kind is averaged over its pairs with a
    non-zero cost (PML's ``AvgNonZeroReducer``) and the two means are added.

    ``last_logs``: ``pos_dist`` and ``neg_dist`` (mean distance of the pairs),
    ``active_pos`` and ``active_neg`` (share of pairs with a non-zero cost),
    ``n_pos_pairs``, ``n_neg_pairs``.

    Args:
        pos_margin: distance below which a positive pair costs nothing.
        neg_margin: distance above which a negative pair costs nothing.
        miner: picks the pairs (default: every pair of the batch).

    Example:
        >>> x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], requires_grad=True)
        >>> criterion = ContrastiveLoss()
        >>> loss = criterion(x, torch.tensor([0, 0, 1]))
        >>> round(loss.item(), 4)  # positives at sqrt(2): 1.4142; negatives at 0 cost 1
        2.4142
        >>> logs = criterion.last_logs
        >>> round(logs["pos_dist"], 4), round(logs["neg_dist"], 4), logs["active_neg"]
        (1.4142, 0.7071, 0.5)
        >>> logs["active_pos"], logs["n_pos_pairs"], logs["n_neg_pairs"]
        (1.0, 2.0, 4.0)
    """

    def __init__(
        self, pos_margin: float = 0.0, neg_margin: float = 1.0, miner: Miner | None = None
    ) -> None:
        super().__init__(miner)
        if pos_margin < 0 or neg_margin < 0:
            raise EmbedlabError(
                f"contrastive loss: margins must be >= 0, got pos_margin={pos_margin}, "
                f"neg_margin={neg_margin}"
            )
        self.pos_margin = float(pos_margin)
        self.neg_margin = float(neg_margin)

    def extra_repr(self) -> str:
        return f"pos_margin={self.pos_margin}, neg_margin={self.neg_margin}, miner={self.miner!r}"

    def compute(self, embeddings: Tensor, ref: Tensor, pairs: Pairs) -> Tensor:
        a1, p, a2, n = pairs
        same = ref is embeddings
        anchors = F.normalize(embeddings, dim=1)
        dist = pairwise_dist(anchors, anchors if same else F.normalize(ref, dim=1))
        pos_dist, neg_dist = dist[a1, p], dist[a2, n]
        pos_loss = F.relu(pos_dist - self.pos_margin)
        neg_loss = F.relu(self.neg_margin - neg_dist)
        with torch.no_grad():
            stats = torch.stack(
                [
                    _mean(pos_dist),
                    _mean(neg_dist),
                    _mean((pos_loss > 0).to(pos_loss)),
                    _mean((neg_loss > 0).to(neg_loss)),
                ]
            ).tolist()
        self.last_logs = dict(
            zip(("pos_dist", "neg_dist", "active_pos", "active_neg"), stats, strict=True)
        )
        self.last_logs.update(n_pos_pairs=float(len(a1)), n_neg_pairs=float(len(a2)))
        return avg_non_zero(pos_loss, embeddings) + avg_non_zero(neg_loss, embeddings)

    def empty_logs(self) -> dict[str, float]:
        keys = ("pos_dist", "neg_dist", "active_pos", "active_neg", "n_pos_pairs", "n_neg_pairs")
        return dict.fromkeys(keys, 0.0)


def _mean(x: Tensor) -> Tensor:
    """Mean, 0 for an empty tensor (a statistic, not a loss)."""
    return x.mean() if x.numel() else x.new_zeros(())
