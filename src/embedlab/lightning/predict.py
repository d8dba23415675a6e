"""Embedding a dataset on Lightning's strategies (several devices or nodes), gathered by index."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import lightning as L
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from embedlab.data.datasets import worker_threads_init
from embedlab.data.samplers import ShardedBatchSampler
from embedlab.lightning.callbacks import gather_batches

if TYPE_CHECKING:
    from embedlab.config import TrainerParams


def wants_distributed(trainer: TrainerParams) -> bool:
    """True when ``train.trainer`` asks for more than one process (devices, nodes, strategy).

    >>> from embedlab.config import TrainerParams
    >>> wants_distributed(TrainerParams()), wants_distributed(TrainerParams(devices=2))
    (False, True)
    >>> wants_distributed(TrainerParams(strategy="ddp"))
    True
    """
    devices = trainer.devices
    single = devices in (1, "1") or (isinstance(devices, list) and len(devices) == 1)
    return not single or trainer.num_nodes > 1 or trainer.strategy != "auto"


class _Indexed(Dataset):
    """``(idx, item)`` pairs, so that every rank's results can be put back in order."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, idx: int) -> tuple[int, Any]:
        return idx, self.dataset[idx]


class _EmbedModule(L.LightningModule):
    """Embed batches, keep ``(idx, embeddings)`` per batch, gather all ranks at epoch end."""

    def __init__(self, model: nn.Module, batch_transform: Callable[[torch.Tensor], Any]) -> None:
        super().__init__()
        self.model = model
        self.batch_transform = batch_transform
        self.parts: list[dict[str, Any]] = []
        self.gathered: list[dict[str, Any]] = []

    def predict_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> dict:
        idx, images = batch
        features = self.model(self.batch_transform(images).to(self.device)).float().cpu()
        part = {"idx": idx.cpu().numpy(), "embeddings": features.numpy()}
        self.parts.append(part)
        return part  # not kept by the loop (return_predictions=False)

    def on_predict_epoch_end(self) -> None:
        self.gathered = gather_batches(self.parts)  # a collective: every rank gets everything


def predict_embeddings(
    model: nn.Module,
    dataset: Dataset,
    batch_transform: Callable[[torch.Tensor], Any],
    batch_size: int,
    num_workers: int,
    trainer: TrainerParams,
) -> np.ndarray | None:
    """Embeddings of every item in dataset order (float32), computed on ``trainer``'s devices.

    ``dataset`` yields image tensors, ``batch_transform`` finishes a collated batch. Ranks
    run the single-process batches (:class:`ShardedBatchSampler`), so each row equals the
    one-process result bit for bit on the same hardware; rows are put back in order by
    index and the padding repeats dropped. Returns the array on global rank 0 and ``None``
    on every other rank (which must not write outputs). Needs a strategy that keeps the
    launching process as rank 0 (``ddp``, torchrun, SLURM), not ``ddp_spawn``.

    Example:
        >>> from embedlab.config import TrainerParams
        >>> model = nn.Linear(2, 3)
        >>> data = [torch.full((2,), float(i)) for i in range(5)]
        >>> out = predict_embeddings(model, data, lambda x: x, 2, 0, TrainerParams())
        >>> out.shape, bool((out[4] == model(data[4]).detach().numpy()).all())
        ((5, 3), True)
    """
    module = _EmbedModule(model, batch_transform)
    runner = L.Trainer(
        accelerator=trainer.accelerator,
        devices=trainer.devices,
        strategy=trainer.strategy,
        num_nodes=trainer.num_nodes,
        precision="32-true",  # the single-process embed pass runs in float32
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        use_distributed_sampler=False,  # ShardedBatchSampler shards by whole batches
    )
    loader = DataLoader(
        _Indexed(dataset),
        batch_sampler=ShardedBatchSampler(len(dataset), batch_size),  # type: ignore[arg-type]
        num_workers=num_workers,
        worker_init_fn=worker_threads_init if num_workers > 0 else None,
    )
    with warnings.catch_warnings():
        # ShardedBatchSampler returns every index (its own doctest); Lightning cannot tell.
        warnings.filterwarnings("ignore", message="You are using a custom batch sampler")
        runner.predict(module, loader, return_predictions=False)
    if not runner.is_global_zero:
        return None
    out: np.ndarray | None = None
    n_items = len(dataset)  # type: ignore[arg-type]
    for part in module.gathered:
        if out is None:
            out = np.empty((n_items, part["embeddings"].shape[1]), dtype=np.float32)
        out[part["idx"]] = part["embeddings"]  # repeats write the same row again
    if out is None:
        return np.empty((0, int(getattr(model, "feat_dim", 0))), dtype=np.float32)
    return out
