"""Multi-similarity pair mining (Wang et al., CVPR 2019), PML's ``MultiSimilarityMiner``."""

from __future__ import annotations

import torch
from torch import Tensor

from embedlab.errors import EmbedlabError
from embedlab.miners.pairs import PairMiner, Pairs, all_pairs
from embedlab.miners.triplets import check_batch
from embedlab.retrieval.distance import pairwise_dist


class MultiSimilarityMiner(PairMiner):
    """Keep the informative pairs by cosine similarity ``s``, as PML's miner does.

    For an anchor, a positive pair is kept when ``s_ap - epsilon < max_n s_an`` (it is less
    similar than the hardest negative plus a margin); a negative pair is kept when
    ``s_an + epsilon > min_p s_ap``. An anchor with no positive keeps no negative and the
    reverse (their extreme is +-inf), exactly like PML.

    Args:
        epsilon: the margin of the two conditions.

    Example:
        >>> x = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.8, 0.6], [0.0, 1.0]])
        >>> a1, p, a2, n = MultiSimilarityMiner(epsilon=0.1).mine(x, torch.tensor([0, 0, 1, 1]))
        >>> list(zip(a1.tolist(), p.tolist())), list(zip(a2.tolist(), n.tolist()))
        ([(0, 1), (1, 0), (2, 3), (3, 2)], [(0, 2), (1, 3), (1, 2), (2, 0), (2, 1), (3, 1)])

        Anchor 0 (positive 1 at ``s = 0.6``) keeps negative 2 (``0.8 + 0.1 > 0.6``), not 3
        (``s = 0``); each anchor's pairs come in increasing similarity, as PML's.
    """

    def __init__(self, epsilon: float = 0.1) -> None:
        if epsilon < 0:
            raise EmbedlabError(f"multi_similarity miner: epsilon must be >= 0, got {epsilon}")
        self.epsilon = float(epsilon)

    def __repr__(self) -> str:
        return f"MultiSimilarityMiner(epsilon={self.epsilon})"

    @torch.no_grad()
    def mine(
        self,
        features: Tensor,
        labels: Tensor,
        ref_features: Tensor | None = None,
        ref_labels: Tensor | None = None,
    ) -> Pairs:
        """Return the kept ``(a1, p, a2, n)`` pairs (indices into ``features`` / the reference)."""
        labels = check_batch(features, labels)
        same_batch = ref_features is None
        ref = features if ref_features is None else ref_features
        ref_lab = labels if ref_labels is None else check_batch(ref, ref_labels)
        # PML's CosineSimilarity: a plain product of the L2-normalised rows.
        sim = 1 - pairwise_dist(features, ref, "cosine")
        a1, p, a2, n = all_pairs(labels, None if same_batch else ref_lab)
        if len(a1) == 0 or len(a2) == 0:
            empty = torch.empty(0, dtype=torch.long, device=labels.device)
            return empty, empty.clone(), empty.clone(), empty.clone()

        # Sorting rows with the other kind of pair pushed to the far end is PML's method;
        # it is reproduced so ties and the set of kept pairs are identical.
        pos_sorting = sim.clone()
        neg_sorting = sim.clone()
        ignore = torch.finfo(sim.dtype).max
        pos_sorting[a2, n] = ignore
        neg_sorting[a1, p] = -ignore
        if same_batch:
            pos_sorting.fill_diagonal_(ignore)
            neg_sorting.fill_diagonal_(-ignore)
        pos_sorted, pos_order = torch.sort(pos_sorting, dim=1)
        neg_sorted, neg_order = torch.sort(neg_sorting, dim=1)
        hard_pos = torch.where(pos_sorted - self.epsilon < neg_sorted[:, -1:])
        hard_neg = torch.where(neg_sorted + self.epsilon > pos_sorted[:, :1])
        return (
            hard_pos[0],
            pos_order[hard_pos[0], hard_pos[1]],
            hard_neg[0],
            neg_order[hard_neg[0], hard_neg[1]],
        )
