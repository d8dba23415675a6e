"""The DataLoaders of the pipeline, built in one place.

- :func:`train_loader`: class-balanced batches (a :class:`BalanceSampler`) of augmented
  items, fresh workers every epoch;
- :func:`inference_loader`: every item once, in whole single-process batches
  (:class:`ShardedBatchSampler`: under DDP each rank takes whole batches, so every
  embedding is bitwise the one-process one); used by validation (in training and in
  the validate stage), embed and search.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from embedlab.data.samplers import BalanceSampler, ShardedBatchSampler


def worker_threads_init(_: int) -> None:
    """Keep each DataLoader worker to one thread so workers don't fight the main process."""
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"


def _worker_options(num_workers: int) -> dict[str, Any]:
    return {
        "num_workers": num_workers,
        "worker_init_fn": worker_threads_init if num_workers > 0 else None,
        "pin_memory": torch.cuda.is_available(),  # async host-to-device copies on a GPU
    }


def train_loader(dataset: Dataset, sampler: BalanceSampler, num_workers: int) -> DataLoader:
    """Balanced training batches.

    Workers are recreated every epoch, seeded from the per-epoch reseed
    (:class:`~embedlab.lightning.EpochSeedCallback`): persistent workers would carry their
    RNG across epochs, and a resumed run would then augment differently from an
    uninterrupted one.

    >>> loader = train_loader(list(range(8)), BalanceSampler([0, 0, 1, 1] * 2, 2, 2), 0)
    >>> [len(batch) for batch in loader]
    [4, 4]
    """
    return DataLoader(
        dataset, batch_sampler=sampler, persistent_workers=False, **_worker_options(num_workers)
    )


def inference_loader(
    dataset: Dataset, batch_size: int, num_workers: int, *, persistent: bool = False
) -> DataLoader:
    """Every item once, in order, ``batch_size`` at a time (sharded by whole batches).

    ``persistent`` keeps the workers between passes (training validates many times).

    >>> [batch.tolist() for batch in inference_loader(torch.arange(5), 2, 0)]
    [[0, 1], [2, 3], [4]]
    """
    return DataLoader(
        dataset,
        batch_sampler=ShardedBatchSampler(len(dataset), batch_size),  # type: ignore[arg-type]
        persistent_workers=persistent and num_workers > 0,
        **_worker_options(num_workers),
    )
