"""A memory bank of past embeddings: more pairs per step than one batch holds.

The idea of OML's ``TripletMinerWithMemory`` and PML's ``CrossBatchMemory``: the
embeddings and labels of the last ``memory_size`` items seen in training stay in a ring
buffer and serve as reference items for the current batch.

Two properties matter in a real run, and PML's queue has neither:

- **Resume.** The ring buffer, its write position and whether it has wrapped are all
  registered buffers, so they are in the checkpoint (the bank is a submodule of the
  criterion, itself part of the ``LightningModule``) and a resumed run mines exactly what
  the uninterrupted one would.
- **DDP.** Under ``torch.distributed`` every rank enqueues the batches of all ranks
  (``all_gather``, in rank order), so all ranks hold the same bank, of ``world_size``
  times more items per step, as one process with the global batch would.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

from embedlab.errors import EmbedlabError


def _world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_from_ranks(x: Tensor) -> tuple[Tensor, int]:
    """Concatenate ``x`` of every rank in rank order; return it and this rank's row offset.

    Ranks may hold different numbers of rows (they are padded for ``all_gather``). Without
    a process group this is ``(x, 0)``.

    >>> gather_from_ranks(torch.ones(2, 3))[0].shape
    torch.Size([2, 3])
    """
    rank, world = _world()
    if world == 1:
        return x, 0
    x = x.detach().contiguous()
    size = torch.tensor([x.shape[0]], device=x.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    counts = [int(s.item()) for s in sizes]
    padded = x.new_zeros((max(counts), *x.shape[1:]))
    padded[: x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    gathered = torch.cat([part[:count] for part, count in zip(parts, counts, strict=True)])
    return gathered, sum(counts[:rank])


class MemoryBank(nn.Module):
    """Ring buffer of the last ``memory_size`` (embedding, label) pairs seen in training.

    Args:
        embedding_size: width of the embeddings.
        memory_size: items kept; it must hold at least one global batch.

    Example:
        >>> bank = MemoryBank(embedding_size=2, memory_size=3)
        >>> slots = bank.enqueue(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([4, 5]))
        >>> slots.tolist(), bank.items()[1].tolist()
        ([0, 1], [4, 5])
        >>> bank.enqueue(torch.tensor([[1.0, 1.0], [2.0, 2.0]]), torch.tensor([6, 7])).tolist()
        [2, 0]
        >>> bank.items()[1].tolist(), sorted(bank.state_dict())
        ([7, 5, 6], ['embeddings', 'filled', 'labels', 'ptr'])
    """

    embeddings: Tensor
    labels: Tensor
    ptr: Tensor
    filled: Tensor

    def __init__(self, embedding_size: int, memory_size: int = 1024) -> None:
        super().__init__()
        if memory_size < 1 or embedding_size < 1:
            raise EmbedlabError(
                f"memory bank: memory_size and embedding_size must be >= 1, got "
                f"{memory_size} and {embedding_size}"
            )
        self.memory_size = int(memory_size)
        self.embedding_size = int(embedding_size)
        self.register_buffer("embeddings", torch.zeros(memory_size, embedding_size))
        self.register_buffer("labels", torch.zeros(memory_size, dtype=torch.long))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.bool))

    def extra_repr(self) -> str:
        return f"embedding_size={self.embedding_size}, memory_size={self.memory_size}"

    def __len__(self) -> int:
        return self.memory_size if bool(self.filled) else int(self.ptr)

    @torch.no_grad()
    def enqueue(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Add this step's batch of every rank; return the slots holding this rank's rows.

        Rows with a non-finite value are left out (their slot is -1).
        """
        if embeddings.ndim != 2 or embeddings.shape[1] != self.embedding_size:
            raise EmbedlabError(
                f"memory bank: expected embeddings [batch, {self.embedding_size}], got "
                f"{tuple(embeddings.shape)}"
            )
        labels = labels.reshape(-1).to(embeddings.device, torch.long)
        all_embeddings, offset = gather_from_ranks(embeddings.detach())
        all_labels, _ = gather_from_ranks(labels)
        total = all_embeddings.shape[0]
        if total > self.memory_size:
            raise EmbedlabError(
                f"train.miner.memory_size: {self.memory_size} is smaller than one global "
                f"batch ({total} items); make it at least {total}"
            )
        if self.embeddings.dtype != embeddings.dtype:  # follow the model's precision, as PML
            self.embeddings = self.embeddings.to(embeddings.dtype)
        # A diverged row (NaN/inf, e.g. a batch that train.on_nonfinite: skip_batch drops)
        # would poison the bank for memory_size items: it is not enqueued (slot -1).
        finite = torch.isfinite(all_embeddings).all(dim=1).to(self.ptr.device)
        kept = int(finite.sum())
        start = int(self.ptr)
        slots = torch.full((total,), -1, dtype=torch.long, device=self.ptr.device)
        slots[finite] = (torch.arange(kept, device=self.ptr.device) + start) % self.memory_size
        self.embeddings[slots[finite]] = all_embeddings[finite.to(all_embeddings.device)]
        self.labels[slots[finite]] = all_labels[finite.to(all_labels.device)].to(self.labels)
        if start + kept >= self.memory_size:
            self.filled.fill_(True)
        self.ptr.fill_((start + kept) % self.memory_size)
        return slots[offset : offset + embeddings.shape[0]].to(embeddings.device)

    def items(self) -> tuple[Tensor, Tensor]:
        """``(embeddings, labels)`` of the items held so far, in slot order (PML's order)."""
        n = len(self)
        return self.embeddings[:n], self.labels[:n]
