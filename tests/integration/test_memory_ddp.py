"""The memory bank under DDP: a 2-process gloo group on CPU, every rank holds the same bank."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from embedlab.losses import CrossBatchMemory, SupConLoss
from embedlab.miners import MultiSimilarityMiner
from embedlab.miners.pairs import drop_self_pairs

pytestmark = [pytest.mark.slow, pytest.mark.integration]

WORLD, STEPS, BATCH, DIM, SIZE = 2, 3, 6, 4, 20


def rank_batch(step: int, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(100 * step + rank)
    emb = F.normalize(torch.randn(BATCH, DIM, generator=gen, dtype=torch.float64), dim=1)
    return emb, torch.randint(0, 3, (BATCH,), generator=gen)


def criterion() -> CrossBatchMemory:
    return CrossBatchMemory(SupConLoss(), DIM, memory_size=SIZE, miner=MultiSimilarityMiner())


def worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        loss_fn = criterion()
        losses = [loss_fn(*rank_batch(step, rank)).item() for step in range(STEPS)]
        torch.save({"losses": losses, "state": loss_fn.state_dict()}, Path(out) / f"{rank}.pt")
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_every_rank_enqueues_all_batches_and_holds_the_same_bank(tmp_path: Path) -> None:
    mp.spawn(worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    results = [torch.load(tmp_path / f"{r}.pt") for r in range(WORLD)]
    states = [r["state"] for r in results]
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key

    # One process, the same global batches enqueued in rank order: the same bank, and each
    # rank's loss is the loss of its own rows against that bank.
    single = criterion()
    for step in range(STEPS):
        parts = [rank_batch(step, r) for r in range(WORLD)]
        slots = single.memory.enqueue(
            torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        )
        bank_emb, bank_labels = single.memory.items()
        for rank, (emb, labels) in enumerate(parts):
            pairs = single.miner.mine(emb, labels, bank_emb, bank_labels)
            own = slots[rank * BATCH : (rank + 1) * BATCH]
            expected = single.loss(emb, labels, drop_self_pairs(pairs, own), bank_emb, bank_labels)
            assert results[rank]["losses"][step] == pytest.approx(expected.item(), rel=1e-12)
    for key, value in single.state_dict().items():
        assert torch.equal(value, states[0][key]), key
    assert int(states[0]["memory.ptr"]) == (STEPS * WORLD * BATCH) % SIZE
