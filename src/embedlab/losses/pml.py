"""``PmlLoss``: any pytorch-metric-learning loss as an embedlab criterion.

The train stage builds it for ``train.loss.name: pml.<Class>``
(:func:`embedlab.stages.criterion.build_criterion`): the PML loss, with its miner, its
statistics as ``last_logs`` (logged as ``train/<stat>``, the miner's as
``train/miner_<stat>``), its weights (if any) trained at ``train.loss.class_weights_lr``.
PML is imported by whoever builds the PML loss (the registry), never here.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from embedlab.errors import EmbedlabError
from embedlab.miners.pairs import PairMiner
from embedlab.miners.pml import IndicesTuple, PmlMiner, miner_logs, recorded_stats
from embedlab.miners.triplets import Miner


def mined_indices(
    miner: Miner,
    embeddings: Tensor,
    labels: Tensor,
    ref_emb: Tensor | None = None,
    ref_labels: Tensor | None = None,
) -> IndicesTuple:
    """What ``miner`` hands a PML loss: a PML miner's own output, our pair miners' pairs,
    our triplet miners' triplets.

    >>> from embedlab.miners import HardTripletsMiner
    >>> x = torch.tensor([[0.0], [0.1], [1.0], [1.1]])
    >>> [t.tolist() for t in mined_indices(HardTripletsMiner(), x, torch.tensor([0, 0, 1, 1]))]
    [[0, 1, 2, 3], [1, 0, 3, 2], [2, 2, 1, 1]]
    """
    if isinstance(miner, PmlMiner):
        return miner.indices(embeddings, labels, ref_emb, ref_labels)
    if isinstance(miner, PairMiner):
        return miner.mine(embeddings, labels, ref_emb, ref_labels)
    if ref_emb is not None:
        raise EmbedlabError(
            f"{type(miner).__name__}: a triplet miner cannot mine a reference set; "
            "use a pair miner (multi_similarity, a pml.* miner) or none"
        )
    with torch.no_grad():
        return miner.sample(embeddings, labels)


class PmlLoss(nn.Module):
    """A pytorch-metric-learning loss with embedlab's criterion interface.

    ``forward(embeddings, labels)`` mines (if a miner is given) and returns the PML
    loss; it also takes PML's ``indices_tuple``, ``ref_emb`` and ``ref_labels``, so a
    pair loss can be wrapped in :class:`~embedlab.losses.CrossBatchMemory`. The PML loss
    is a submodule: its weights (class weights, a learnt ``beta``) are parameters of
    this module, trained by the stage's optimizer and saved in its checkpoints.

    ``last_logs``: the statistics PML recorded (build the loss, its distance and reducer
    with ``collect_stats=True``), ``distance_<stat>``, ``reducer_<stat>``, and the miner's
    as ``miner_<stat>``.

    Args:
        loss: a PML loss (``pytorch_metric_learning.losses.CircleLoss()``...).
        miner: any embedlab miner, or a :class:`~embedlab.miners.pml.PmlMiner`; ``None``:
            the loss's own default (every pair or triplet).

    Example:
        >>> from pytorch_metric_learning.losses import ContrastiveLoss
        >>> criterion = PmlLoss(ContrastiveLoss(neg_margin=2.0))
        >>> x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
        >>> round(criterion(x, torch.tensor([0, 0, 1, 1])).item(), 4)  # 2 - sqrt(2)
        0.5858
        >>> criterion.takes_reference_set
        True
    """

    def __init__(self, loss: nn.Module, miner: Miner | None = None) -> None:
        super().__init__()
        self.loss = loss
        self.miner = miner
        self.last_logs: dict[str, float] = {}

    @property
    def takes_reference_set(self) -> bool:
        """Whether the loss is one of PML's pair losses (a memory bank can feed it)."""
        return any(cls.__name__ == "GenericPairLoss" for cls in type(self.loss).__mro__)

    def extra_repr(self) -> str:
        return f"miner={self.miner!r}"

    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor,
        indices_tuple: IndicesTuple | None = None,
        ref_emb: Tensor | None = None,
        ref_labels: Tensor | None = None,
    ) -> Tensor:
        """The PML loss of ``embeddings [B, D]`` with ``labels [B]``."""
        if indices_tuple is None and self.miner is not None:
            indices_tuple = mined_indices(self.miner, embeddings, labels, ref_emb, ref_labels)
        try:
            value = self.loss(embeddings, labels, indices_tuple, ref_emb, ref_labels)
        except (ValueError, AssertionError) as err:  # PML's checks of its inputs
            raise EmbedlabError(f"{type(self.loss).__name__}: {err}") from None
        self.last_logs = {
            **_module_stats(self.loss),
            **miner_logs(self.miner),
        }
        return value


def _module_stats(loss: Any) -> dict[str, float]:
    """The loss's statistics and those of its distance and reducer."""
    return {
        **recorded_stats(loss),
        **recorded_stats(getattr(loss, "distance", None), "distance_"),
        **recorded_stats(getattr(loss, "reducer", None), "reducer_"),
    }
