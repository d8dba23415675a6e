"""``MetricValCallback``: retrieval metrics (and pictures) at every validation.

``EpochSeedCallback``: every epoch's randomness as a function of ``(seed, epoch, rank)``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback
from PIL import Image

from embedlab.metrics import EmbeddingMetrics
from embedlab.tracking.names import metric_names
from embedlab.viz import render_validation_images


def _detach(batch: dict[str, Any], keys: set[str]) -> dict[str, Any]:
    return {
        k: v.detach().cpu() if isinstance(v, torch.Tensor) else v
        for k, v in batch.items()
        if k in keys
    }


def _metric_keys(metric: EmbeddingMetrics) -> set[str]:
    """Batch keys :class:`EmbeddingMetrics` reads (the images themselves are not kept)."""
    return {
        metric.embeddings_key,
        metric.labels_key,
        metric.is_query_key,
        metric.is_gallery_key,
        metric.categories_key,
        metric.sequence_key,
        metric.indices_key,
        *metric.extra_keys,
    }


def gather_batches(batches: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every rank's batches, rank by rank (just ``batches`` outside a process group).

    A collective: every rank must call it. Items repeated by a distributed sampler stay
    repeated; :class:`EmbeddingMetrics` drops them by their ``idx``.

    >>> gather_batches([{"idx": [0]}])
    [{'idx': [0]}]
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return batches
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, batches)
    return [batch for rank_batches in gathered for batch in rank_batches]


class MetricValCallback(Callback):
    """Feed validation outputs into ``metric``; log ``val/<category>/<metric>@<k>``.

    Args:
        metric: an :class:`EmbeddingMetrics`.
        log_images: draw the prediction and worst-query grids at each validation and
            send them to every logger that has ``log_image`` (step = global step).
        load_image: position in the validation data -> PIL image (needed for pictures).
        image_options: keyword arguments of :func:`render_validation_images`.
        on_metrics: called with the computed metrics dict (the train stage keeps the last).
    """

    def __init__(
        self,
        metric: EmbeddingMetrics,
        log_images: bool = False,
        load_image: Callable[[int], Image.Image] | None = None,
        image_options: dict[str, Any] | None = None,
        on_metrics: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        super().__init__()
        self.metric = metric
        self.log_images = log_images and load_image is not None
        self.load_image = load_image
        self.image_options = image_options or {}
        self.on_metrics = on_metrics
        self.last_images: dict[str, Image.Image] = {}
        self._keys = _metric_keys(metric)
        self._batches: list[dict[str, Any]] = []

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loaders = trainer.val_dataloaders
        loader = loaders[0] if isinstance(loaders, list | tuple) else loaders
        self.metric.setup(num_samples=len(loader.dataset))
        self._batches = []

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._batches.append(_detach(outputs, self._keys))

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Under DDP each rank embedded a shard: gather all of them, then every rank computes
        # the same metrics (EmbeddingMetrics sorts by idx and drops the padding repeats).
        for batch in gather_batches(self._batches):
            self.metric.update_data(batch)
        self._batches = []
        metrics = self.metric.compute_metrics()
        names = metric_names(metrics)
        # Lightning keeps them for callbacks (checkpoint monitors) but would send them to
        # the loggers as float32; loggers get the exact values, at the global step.
        pl_module.log_dict(names, on_epoch=True, batch_size=1, logger=False)
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(names, step=trainer.global_step)
        if self.on_metrics is not None:
            self.on_metrics(metrics)
        if self.log_images and trainer.is_global_zero and self.load_image is not None:
            self.last_images = render_validation_images(
                self.metric, self.load_image, **self.image_options
            )
            for name, image in self.last_images.items():
                for logger in trainer.loggers:
                    if hasattr(logger, "log_image"):
                        logger.log_image(f"val/{name}", image, step=trainer.global_step)


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """A 32-bit seed derived from ``(seed, epoch, rank)``.

    >>> epoch_seed(0, 1) == epoch_seed(0, 1), epoch_seed(0, 1) == epoch_seed(0, 2)
    (True, False)
    """
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


class EpochSeedCallback(Callback):
    """Make each training epoch a function of ``(seed, epoch, rank)`` and the restored weights.

    At the start of every epoch: reseed ``torch``, ``numpy`` and ``random`` (augmentations,
    the miner's triplet subsets, the seeds DataLoader workers start from) and call
    ``set_epoch`` on the train loader's batch sampler (Lightning only calls it on a loader's
    ``sampler``). A run resumed from an epoch-end checkpoint therefore draws exactly what the
    uninterrupted run drew, without restoring any RNG state.

    >>> cb = EpochSeedCallback(seed=3)
    >>> cb.seed
    3
    """

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.seed = int(seed)
        self.first_epoch: int | None = None
        """Epochs already done when this fit started (> 0 after a resume)."""
        self._fresh_iterator = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.first_epoch = trainer.current_epoch
        self._fresh_iterator = True

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        seed = epoch_seed(self.seed, epoch, trainer.global_rank)
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)
        loader = trainer.train_dataloader
        batch_sampler = getattr(loader, "batch_sampler", None)
        if callable(getattr(batch_sampler, "set_epoch", None)):
            batch_sampler.set_epoch(epoch)
        if self._fresh_iterator:
            # Lightning creates the first epoch's iterator before this hook (later epochs'
            # after it): it drew the workers' base seed, and workers may have prefetched
            # batches of a stale epoch. Recreate it now, as every later epoch does.
            self._fresh_iterator = False
            fetcher = getattr(trainer.fit_loop, "_data_fetcher", None)
            if fetcher is not None:
                iter(fetcher)
