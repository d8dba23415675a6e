"""The memory bank: ring-buffer semantics, resume from a state dict, clear errors."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from embedlab.errors import EmbedlabError
from embedlab.losses import ContrastiveLoss, CrossBatchMemory, SupConLoss, TripletLossWithMiner
from embedlab.miners import HardTripletsMiner, MemoryBank, MultiSimilarityMiner


def batches(n: int, size: int = 6, dim: int = 4, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(n):
        emb = F.normalize(torch.randn(size, dim, generator=gen), dim=1)
        yield emb.requires_grad_(True), torch.randint(0, 3, (size,), generator=gen)


def test_bank_fills_then_overwrites_the_oldest_items() -> None:
    bank = MemoryBank(embedding_size=1, memory_size=5)
    for step in range(3):
        bank.enqueue(torch.full((2, 1), float(step)), torch.full((2,), step))
    # slots 0-1: step 0, 2-3: step 1, then step 2 wraps into 4 and 0
    assert bank.labels.tolist() == [2, 0, 1, 1, 2]
    assert int(bank.ptr) == 1 and bool(bank.filled) and len(bank) == 5


def test_bank_holds_only_what_was_enqueued_before_it_fills() -> None:
    bank = MemoryBank(embedding_size=2, memory_size=10)
    bank.enqueue(torch.ones(3, 2), torch.tensor([1, 2, 3]))
    embeddings, labels = bank.items()
    assert embeddings.shape == (3, 2) and labels.tolist() == [1, 2, 3]


def test_non_finite_rows_are_not_enqueued() -> None:
    bank = MemoryBank(embedding_size=1, memory_size=4)
    slots = bank.enqueue(torch.tensor([[1.0], [float("nan")], [3.0]]), torch.tensor([1, 2, 3]))
    assert slots.tolist() == [0, -1, 1]
    assert bank.items()[1].tolist() == [1, 3] and int(bank.ptr) == 2


def test_batch_larger_than_the_bank_is_an_error_naming_the_param() -> None:
    with pytest.raises(EmbedlabError, match=r"train.miner.memory_size: 4 is smaller than one"):
        MemoryBank(embedding_size=2, memory_size=4).enqueue(torch.ones(5, 2), torch.zeros(5))


@pytest.mark.parametrize("miner", [None, MultiSimilarityMiner()])
def test_resume_from_state_dict_gives_the_same_losses(miner) -> None:
    """Stop after 4 steps, restore a fresh criterion from the state dict: same next losses."""
    steps = list(batches(8))
    original = CrossBatchMemory(SupConLoss(), embedding_size=4, memory_size=16, miner=miner)
    for emb, labels in steps[:4]:
        original(emb, labels)
    state = copy.deepcopy(original.state_dict())
    assert {"memory.embeddings", "memory.labels", "memory.ptr", "memory.filled"} <= set(state)

    restored = CrossBatchMemory(SupConLoss(), embedding_size=4, memory_size=16, miner=miner)
    restored.load_state_dict(state)
    for emb, labels in steps[4:]:
        expected = original(emb, labels)
        assert torch.equal(restored(emb, labels), expected)
        assert restored.last_logs == original.last_logs
    assert torch.equal(restored.memory.embeddings, original.memory.embeddings)


def test_without_the_saved_position_the_losses_would_differ() -> None:
    """The check above can fail: a bank restored without ``ptr``/``filled`` diverges."""
    steps = list(batches(6))
    original = CrossBatchMemory(ContrastiveLoss(), embedding_size=4, memory_size=16)
    for emb, labels in steps[:3]:
        original(emb, labels)
    state = {k: v for k, v in original.state_dict().items() if not k.endswith(("ptr", "filled"))}
    restored = CrossBatchMemory(ContrastiveLoss(), embedding_size=4, memory_size=16)
    restored.load_state_dict(state, strict=False)
    emb, labels = steps[3]
    assert not torch.equal(restored(emb, labels), original(emb, labels))


def test_gradient_flows_to_the_batch_only() -> None:
    criterion = CrossBatchMemory(ContrastiveLoss(), embedding_size=4, memory_size=32)
    for emb, labels in batches(3):
        criterion(emb, labels).backward()
        assert emb.grad is not None and emb.grad.abs().sum() > 0
    assert not criterion.memory.embeddings.requires_grad


def test_memory_wraps_only_pair_losses_and_pair_miners() -> None:
    with pytest.raises(EmbedlabError, match="works with the pair losses"):
        CrossBatchMemory(TripletLossWithMiner(), embedding_size=4)  # type: ignore[arg-type]
    with pytest.raises(EmbedlabError, match="must mine pairs against the bank"):
        CrossBatchMemory(SupConLoss(), embedding_size=4, miner=HardTripletsMiner())  # type: ignore[arg-type]
