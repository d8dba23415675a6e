"""What the pair losses share: pairs from a miner or all pairs, reference sets, logs.

A pair loss compares each anchor of the batch with a reference set: the batch itself, or
a memory bank (:class:`~embedlab.losses.CrossBatchMemory`). Its pairs come, in order of
precedence, from an explicit ``indices_tuple``, from its miner, or are all pairs, the
way pytorch-metric-learning's ``GenericPairLoss`` does it.
"""

from __future__ import annotations

from abc import abstractmethod

import torch
from torch import Tensor, nn

from embedlab.errors import EmbedlabError
from embedlab.miners.pairs import PairMiner, Pairs, all_pairs, triplets_to_pairs
from embedlab.miners.pml import miner_logs
from embedlab.miners.triplets import Miner, Triplets, check_batch


def check_embeddings(embeddings: Tensor, labels: Tensor, where: str) -> Tensor:
    """Labels as a 1-D long tensor on the embeddings' device, shapes checked."""
    return check_batch(embeddings, labels, where, noun="embedding").long()


def zero_loss(embeddings: Tensor) -> Tensor:
    """A 0 still connected to ``embeddings`` (backward runs, DDP sees every gradient).

    PML returns ``sum(embeddings * 0)``; an empty sum is the same 0 and stays 0 (not NaN)
    when an embedding holds inf.
    """
    return embeddings[:0].sum()


def masked_logsumexp(x: Tensor, keep: Tensor, add_one: bool, dim: int) -> Tensor:
    """``log(sum(exp(x[keep])) [+ exp(0)])`` along ``dim``; 0 where nothing is kept.

    PML's ``lmu.logsumexp`` (keepdim output), reproduced operation for operation.

    >>> x = torch.tensor([[0.0, 1.0]])
    >>> masked_logsumexp(x, torch.tensor([[False, True]]), add_one=True, dim=1)
    tensor([[1.3133]])
    """
    x = x.masked_fill(~keep, torch.finfo(x.dtype).min)
    if add_one:
        shape = list(x.shape)
        shape[dim] = 1
        x = torch.cat([x, x.new_zeros(shape)], dim=dim)
    out = torch.logsumexp(x, dim=dim, keepdim=True)
    return out.masked_fill(~keep.any(dim=dim, keepdim=True), 0)


def pair_masks(pairs: Pairs, shape: tuple[int, int], like: Tensor) -> tuple[Tensor, Tensor]:
    """0/1 float masks of the positive and negative pairs on an ``[anchors, refs]`` grid."""
    a1, p, a2, n = pairs
    pos, neg = (
        torch.zeros(shape, dtype=like.dtype, device=like.device),
        torch.zeros(shape, dtype=like.dtype, device=like.device),
    )
    pos[a1, p] = 1
    neg[a2, n] = 1
    if bool(((pos != 0) & (neg != 0)).any()):
        raise EmbedlabError("pair loss: a pair is both positive and negative")
    return pos, neg


class PairLoss(nn.Module):
    """Base of the losses on pairs of the batch (or of the batch and a reference set).

    Subclasses implement :meth:`compute` on the anchors, the reference set and the pairs;
    ``last_logs`` holds the statistics of the last call.

    Args:
        miner: picks the pairs; a :class:`~embedlab.miners.pairs.PairMiner` (a
            :class:`~embedlab.miners.pml.PmlMiner` too) or a triplet
            :class:`~embedlab.miners.Miner` (its triplets' pairs, as PML converts them).
            ``None`` (PML's default) uses every pair.
    """

    def __init__(self, miner: Miner | None = None) -> None:
        super().__init__()
        self.miner = miner
        self.last_logs: dict[str, float] = {}

    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor,
        indices_tuple: Pairs | Triplets | None = None,
        ref_emb: Tensor | None = None,
        ref_labels: Tensor | None = None,
    ) -> Tensor:
        """Loss of ``embeddings [B, D]`` with ``labels [B]`` (PML's call signature).

        ``ref_emb``/``ref_labels`` replace the batch as the set the anchors are compared
        with; ``indices_tuple`` (pairs, or triplets) replaces the miner.
        """
        name = type(self).__name__
        labels = check_embeddings(embeddings, labels, name)
        if (ref_emb is None) != (ref_labels is None):
            raise EmbedlabError(f"{name}: pass both ref_emb and ref_labels, or neither")
        if ref_emb is not None:
            ref_labels = check_embeddings(ref_emb, ref_labels, f"{name} (reference set)")
        pairs = self.pairs(embeddings, labels, indices_tuple, ref_emb, ref_labels)
        ref = embeddings if ref_emb is None else ref_emb
        if all(len(x) <= 1 for x in pairs):  # PML's rule: no (or a single) pair, no loss
            self.last_logs = {**self.empty_logs(), **miner_logs(self.miner)}
            return zero_loss(embeddings)
        value = self.compute(embeddings, ref, pairs)
        self.last_logs.update(miner_logs(self.miner))  # a pml.* miner's statistics
        return value

    def pairs(
        self,
        embeddings: Tensor,
        labels: Tensor,
        indices_tuple: Pairs | Triplets | None,
        ref_emb: Tensor | None,
        ref_labels: Tensor | None,
    ) -> Pairs:
        """The pairs the loss is computed on (see the class docstring)."""
        if indices_tuple is None:
            if self.miner is None:
                return all_pairs(labels, ref_labels)
            if isinstance(self.miner, PairMiner):
                return self.miner.mine(embeddings, labels, ref_emb, ref_labels)
            if ref_emb is not None:
                raise EmbedlabError(
                    f"{type(self).__name__}: a triplet miner cannot mine a reference set; "
                    "use a pair miner (multi_similarity) or none"
                )
            with torch.no_grad():
                indices_tuple = self.miner.sample(embeddings, labels)
        if len(indices_tuple) == 3:
            return triplets_to_pairs(indices_tuple)  # type: ignore[arg-type]
        return indices_tuple  # type: ignore[return-value]

    @abstractmethod
    def compute(self, embeddings: Tensor, ref: Tensor, pairs: Pairs) -> Tensor:
        """The reduced loss of the anchors ``embeddings`` against ``ref`` on ``pairs``."""

    @abstractmethod
    def empty_logs(self) -> dict[str, float]:
        """``last_logs`` of a step without pairs (same keys, zeros)."""
