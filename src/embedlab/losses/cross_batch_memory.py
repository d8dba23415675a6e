"""``CrossBatchMemory``: a pair loss against a memory bank of past batches (PML's wrapper)."""

from __future__ import annotations

from torch import Tensor, nn

from embedlab.errors import EmbedlabError
from embedlab.losses.pair_base import PairLoss, check_embeddings
from embedlab.miners.memory import MemoryBank
from embedlab.miners.pairs import PairMiner, all_pairs, drop_self_pairs
from embedlab.miners.pml import miner_logs


class CrossBatchMemory(nn.Module):
    """Compare each batch with the last ``memory_size`` embeddings seen (Wang et al., 2020).

    PML's ``CrossBatchMemory`` semantics: the batch is enqueued first; its anchors are
    then compared with every item of the bank (the batch included, without gradient to
    the bank side), the pairs coming from ``miner`` (a pair miner run against the bank)
    or being all pairs; an anchor's pair with its own copy in the bank is dropped. The
    bank (:class:`~embedlab.miners.memory.MemoryBank`) lives in registered buffers, so
    it is saved with the checkpoint and restored on resume, and under DDP it receives
    the batches of all ranks.

    ``last_logs``: the wrapped loss's, plus ``memory_items`` (items in the bank).

    Args:
        loss: a pair loss (:class:`~embedlab.losses.ContrastiveLoss`,
            :class:`~embedlab.losses.MultiSimilarityLoss`, :class:`~embedlab.losses.SupConLoss`,
            or a :class:`~embedlab.losses.PmlLoss` of a PML pair loss: ``pml.CircleLoss``...).
        embedding_size: width of the embeddings.
        memory_size: items kept (at least one global batch).
        miner: a :class:`~embedlab.miners.pairs.PairMiner` (our ``multi_similarity``, a
            :class:`~embedlab.miners.pml.PmlMiner`), or ``None`` for all pairs.

    Example:
        >>> import torch
        >>> from embedlab.losses import ContrastiveLoss
        >>> loss = ContrastiveLoss(neg_margin=2.0)
        >>> criterion = CrossBatchMemory(loss, embedding_size=2, memory_size=8)
        >>> x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> first = criterion(x, torch.tensor([0, 1]))  # no positive: only self copies
        >>> criterion.last_logs["n_pos_pairs"], criterion.last_logs["memory_items"]
        (0.0, 2.0)
        >>> second = criterion(x, torch.tensor([0, 1]))  # the last batch's copies are positives
        >>> criterion.last_logs["n_pos_pairs"], criterion.last_logs["memory_items"]
        (2.0, 4.0)
        >>> round(first.item(), 4), round(second.item(), 4)  # negatives at sqrt(2) cost 2 - sqrt(2)
        (0.5858, 0.5858)
    """

    def __init__(
        self,
        loss: nn.Module,
        embedding_size: int,
        memory_size: int = 1024,
        miner: PairMiner | None = None,
    ) -> None:
        super().__init__()
        if not (isinstance(loss, PairLoss) or getattr(loss, "takes_reference_set", False)):
            raise EmbedlabError(
                f"CrossBatchMemory works with the pair losses (contrastive, multi_similarity, "
                f"supcon, a PmlLoss of a PML pair loss), got {type(loss).__name__}"
            )
        if miner is not None and not isinstance(miner, PairMiner):
            raise EmbedlabError(
                f"CrossBatchMemory: the miner must mine pairs against the bank "
                f"(multi_similarity), got {type(miner).__name__}"
            )
        self.loss = loss
        self.miner = miner
        self.memory = MemoryBank(embedding_size, memory_size)
        self.last_logs: dict[str, float] = {}

    @property
    def embedding_size(self) -> int:
        return self.memory.embedding_size

    @property
    def memory_size(self) -> int:
        return self.memory.memory_size

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Enqueue the batch, then the wrapped loss of its anchors against the bank."""
        labels = check_embeddings(embeddings, labels, "CrossBatchMemory")
        slots = self.memory.enqueue(embeddings, labels)
        bank_emb, bank_labels = self.memory.items()
        bank_emb = bank_emb.to(embeddings.dtype)
        if self.miner is not None:
            pairs = self.miner.mine(embeddings, labels, bank_emb, bank_labels)
        else:
            pairs = all_pairs(labels, bank_labels)
        pairs = drop_self_pairs(pairs, slots)
        value = self.loss(embeddings, labels, pairs, bank_emb, bank_labels)
        self.last_logs = {
            **self.loss.last_logs,
            **miner_logs(self.miner),
            "memory_items": float(len(self.memory)),
        }
        return value
