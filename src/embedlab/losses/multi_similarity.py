"""Multi-similarity loss (Wang et al., CVPR 2019), PML's ``MultiSimilarityLoss``."""

from __future__ import annotations

import torch
from torch import Tensor

from embedlab.errors import EmbedlabError
from embedlab.losses.pair_base import PairLoss, masked_logsumexp, pair_masks
from embedlab.miners.pairs import Pairs
from embedlab.miners.triplets import Miner
from embedlab.retrieval.distance import pairwise_dist


def cosine_similarity_matrix(embeddings: Tensor, ref: Tensor) -> Tensor:
    """``cos(x_i, r_j)`` for every pair: PML's ``CosineSimilarity`` (normalise, then a product).

    Measured with :func:`~embedlab.retrieval.distance.pairwise_dist` as ``1 - cosine
    distance``, the library's one distance function.

    >>> cosine_similarity_matrix(torch.tensor([[2.0, 0.0]]), torch.tensor([[1.0, 1.0]]))
    tensor([[0.7071]])
    """
    return 1 - pairwise_dist(embeddings, ref, "cosine")


class MultiSimilarityLoss(PairLoss):
    """Soft-weighted pair loss over cosine similarities ``s`` of the anchor's pairs.

    Per anchor: ``1/alpha * log(1 + sum_P exp(-alpha (s_ap - base)))
    + 1/beta * log(1 + sum_N exp(beta (s_an - base)))``, averaged over the anchors of the
    batch (PML's ``MeanReducer``; anchors without pairs count as 0).

    ``last_logs``: ``pos_sim`` and ``neg_sim`` (mean similarity of the pairs),
    ``pos_loss`` and ``neg_loss`` (the two terms, averaged over anchors),
    ``n_pos_pairs``, ``n_neg_pairs``.

    Args:
        alpha: weight of the positive pairs' exponent.
        beta: weight of the negative pairs' exponent.
        base: similarity the exponents are centred on.
        miner: picks the pairs (default: every pair; PML pairs it with
            :class:`~embedlab.miners.MultiSimilarityMiner`).

    Example:
        >>> x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], requires_grad=True)
        >>> criterion = MultiSimilarityLoss()
        >>> # anchors 0, 1: log(1 + e) / 2 for the positive at s = 0; anchor 0 and 2: ~0.5 for
        >>> # the negative at s = 1 (log(1 + e^25) / 50); mean of 1.1566, 0.6566, 0.5
        >>> round(criterion(x, torch.tensor([0, 0, 1])).item(), 4)
        0.7711
        >>> criterion.last_logs["pos_sim"], criterion.last_logs["neg_sim"]
        (0.0, 0.5)
    """

    def __init__(
        self, alpha: float = 2.0, beta: float = 50.0, base: float = 0.5, miner: Miner | None = None
    ) -> None:
        super().__init__(miner)
        if alpha <= 0 or beta <= 0:
            raise EmbedlabError(
                f"multi_similarity loss: alpha and beta must be > 0, got {alpha} and {beta}"
            )
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.base = float(base)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta}, base={self.base}, miner={self.miner!r}"

    def compute(self, embeddings: Tensor, ref: Tensor, pairs: Pairs) -> Tensor:
        sim = cosine_similarity_matrix(embeddings, ref)
        pos, neg = pair_masks(pairs, (sim.shape[0], sim.shape[1]), sim)
        pos_loss = (1.0 / self.alpha) * masked_logsumexp(
            self.alpha * (self.base - sim), pos.bool(), add_one=True, dim=1
        )
        neg_loss = (1.0 / self.beta) * masked_logsumexp(
            self.beta * (sim - self.base), neg.bool(), add_one=True, dim=1
        )
        with torch.no_grad():
            stats = torch.stack(
                [
                    (sim * pos).sum() / pos.sum().clamp(min=1),
                    (sim * neg).sum() / neg.sum().clamp(min=1),
                    pos_loss.mean(),
                    neg_loss.mean(),
                    pos.sum(),
                    neg.sum(),
                ]
            ).tolist()
        self.last_logs = dict(zip(self.empty_logs(), stats, strict=True))
        return (pos_loss + neg_loss).mean()

    def empty_logs(self) -> dict[str, float]:
        keys = ("pos_sim", "neg_sim", "pos_loss", "neg_loss", "n_pos_pairs", "n_neg_pairs")
        return dict.fromkeys(keys, 0.0)
