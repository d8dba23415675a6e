"""Supervised contrastive loss (Khosla et al., NeurIPS 2020), PML's ``SupConLoss``."""

from __future__ import annotations

import torch
from torch import Tensor

from embedlab.errors import EmbedlabError
from embedlab.losses.contrastive import avg_non_zero
from embedlab.losses.multi_similarity import cosine_similarity_matrix
from embedlab.losses.pair_base import PairLoss, masked_logsumexp, pair_masks, zero_loss
from embedlab.miners.pairs import Pairs
from embedlab.miners.triplets import Miner


class SupConLoss(PairLoss):
    """Softmax over each anchor's pairs at a temperature, averaged over its positives.

    With cosine similarities ``s`` and ``z = s / temperature``, an anchor costs
    ``-mean_{p in P} (z_ap - log sum_{j in P u N} exp(z_aj))``; anchors are averaged over
    those with a non-zero cost (PML's ``AvgNonZeroReducer``).

    ``last_logs``: ``pos_sim``, ``neg_sim`` (mean similarity of the pairs), ``active``
    (share of anchors with a non-zero cost), ``n_pos_pairs``, ``n_neg_pairs``.

    Args:
        temperature: softmax temperature (> 0); small values focus on hard pairs.
        miner: picks the pairs (default: every pair of the batch).

    Example:
        >>> x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], requires_grad=True)
        >>> criterion = SupConLoss(temperature=1.0)
        >>> # anchor 0: log(1 + e); anchor 1: log 2; anchor 2 has no positive (left out)
        >>> round(criterion(x, torch.tensor([0, 0, 1])).item(), 4)
        1.0032
        >>> criterion.last_logs["active"]
        0.6666666865348816
    """

    def __init__(self, temperature: float = 0.1, miner: Miner | None = None) -> None:
        super().__init__(miner)
        if temperature <= 0:
            raise EmbedlabError(f"supcon loss: temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, miner={self.miner!r}"

    def compute(self, embeddings: Tensor, ref: Tensor, pairs: Pairs) -> Tensor:
        sim = cosine_similarity_matrix(embeddings, ref)
        pos, neg = pair_masks(pairs, (sim.shape[0], sim.shape[1]), sim)
        if not (bool(pos.any()) and bool(neg.any())):
            self.last_logs = self.empty_logs()
            return zero_loss(embeddings)
        logits = sim / self.temperature
        # The row maximum (over every column, as PML) only keeps exp() in range.
        logits = logits - logits.max(dim=1, keepdim=True).values.detach()
        denominator = masked_logsumexp(logits, (pos + neg).bool(), add_one=False, dim=1)
        log_prob = logits - denominator
        mean_log_prob_pos = (pos * log_prob).sum(dim=1) / (
            pos.sum(dim=1) + torch.finfo(logits.dtype).tiny
        )
        losses = -mean_log_prob_pos
        with torch.no_grad():
            stats = torch.stack(
                [
                    (sim * pos).sum() / pos.sum(),
                    (sim * neg).sum() / neg.sum(),
                    (losses > 0).to(sim).mean(),
                    pos.sum(),
                    neg.sum(),
                ]
            ).tolist()
        self.last_logs = dict(zip(self.empty_logs(), stats, strict=True))
        return avg_non_zero(losses, embeddings)

    def empty_logs(self) -> dict[str, float]:
        return dict.fromkeys(("pos_sim", "neg_sim", "active", "n_pos_pairs", "n_neg_pairs"), 0.0)
