"""``MetricValCallback``: retrieval metrics (and pictures) at every validation.

``EmbeddingCollector``: the embeddings of a validation or prediction pass, gathered.

``EpochSeedCallback``: every epoch's randomness as a function of ``(seed, epoch, rank)``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from PIL import Image

from embedlab.data import keys
from embedlab.data.datasets import DatasetQueryGallery
from embedlab.embedding.gather import assemble, gather_batches
from embedlab.lightning.module import TrainingDiverged, configured_lr, diverged_message
from embedlab.metrics import EmbeddingMetrics, MetricTable
from embedlab.tracking.names import curves_and_facts
from embedlab.viz import render_validation_images


class EmbeddingCollector(Callback):
    """Keep the ``{idx, embeddings}`` of every validation or prediction batch of a pass.

    At the end of the pass every rank's parts are gathered (:func:`gather_batches`, a
    collective), so :attr:`parts` holds the whole dataset on every rank.
    """

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[dict[str, Any]] = []
        self._pending: list[dict[str, Any]] = []

    def _keep(self, outputs: dict[str, Any]) -> None:
        self._pending.append(
            {
                keys.IDX: outputs[keys.IDX].detach().cpu(),
                keys.EMBEDDINGS: outputs[keys.EMBEDDINGS].detach().float().cpu(),
            }
        )

    def _gather(self) -> list[dict[str, Any]]:
        self.parts, self._pending = gather_batches(self._pending), []
        return self.parts

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pending = []

    def on_predict_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pending = []

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._keep(outputs)

    def on_predict_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._keep(outputs)

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._gather()


class MetricValCallback(EmbeddingCollector):
    """Retrieval metrics of every validation pass; log ``val/<category>/<metric>@<k>``.

    The one validation path of the project: training validates through it, and so does
    the validate stage (``trainer.validate``). Batches bring ``{idx, embeddings}``
    (:meth:`ExtractorModule.embed_step`); labels, roles and categories are whole columns
    of ``dataset``, so nothing else travels through the loader.

    Args:
        metric: an :class:`EmbeddingMetrics`.
        dataset: the validation :class:`~embedlab.data.datasets.DatasetQueryGallery`.
        log_images: draw the prediction and worst-query grids at each validation and
            send them to every logger that has ``log_image`` (step = global step).
        image_options: keyword arguments of :func:`render_validation_images`, and
            ``worst_by``: the per-query metric the worst queries are picked by (``map@5``).
        on_metrics: called with each validation's :class:`~embedlab.metrics.MetricTable`
            (the train stage keeps them all).
        log_metrics: send the metrics to the trainer's loggers.
    """

    def __init__(
        self,
        metric: EmbeddingMetrics,
        dataset: DatasetQueryGallery,
        log_images: bool = False,
        image_options: dict[str, Any] | None = None,
        on_metrics: Callable[[MetricTable], None] | None = None,
        log_metrics: bool = True,
    ) -> None:
        super().__init__()
        self.metric = metric
        self.dataset = dataset
        self.log_images = log_images
        self.image_options = image_options or {}
        self.on_metrics = on_metrics
        self.log_metrics = log_metrics
        self.last_metrics: dict[str, Any] = {}
        self.last_images: dict[str, Image.Image] = {}
        self.last_epoch = 0
        """Training epochs done when the last validation ran (0: the untrained model)."""

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Under DDP each rank embedded a shard: gather all of them, then every rank computes
        # the same metrics; padding repeats write the same row twice.
        embeddings = assemble(self._gather(), len(self.dataset))
        self.parts = []
        bad = int((~np.isfinite(embeddings).all(axis=1)).sum())
        if bad and trainer.optimizers:  # during training: the weights went non-finite
            lr = configured_lr(trainer)
            what = f"{bad} of {len(embeddings)} validation embeddings are NaN or inf"
            raise TrainingDiverged(diverged_message(trainer.global_step, what, lr))
        self.metric.setup(num_samples=len(self.dataset))
        self.metric.update_data(
            {**self.dataset.columns(), keys.EMBEDDINGS: torch.from_numpy(embeddings)}
        )
        metrics = self.metric.compute_metrics()
        self.last_metrics = metrics
        # Inside fit, validation closes an epoch that current_epoch still counts as running.
        fitting = trainer.state.fn == "fit"
        self.last_epoch = trainer.current_epoch + 1 if fitting else trainer.current_epoch
        names = self.metric.table.tracker_names()
        # Lightning keeps them for callbacks (checkpoint monitors) but would send them to
        # the loggers as float32; loggers get the exact values, at the global step.
        pl_module.log_dict(names, on_epoch=True, batch_size=1, logger=False)
        if self.log_metrics and trainer.is_global_zero:
            curves, _ = curves_and_facts(metrics)  # facts go to the summary (validate stage)
            for logger in trainer.loggers:
                logger.log_metrics(curves, step=trainer.global_step)
        if self.on_metrics is not None:
            self.on_metrics(self.metric.table)
        if self.log_images and trainer.is_global_zero:
            options = dict(self.image_options)
            worst_values = self.metric.table.per_query_values(options.pop("worst_by", "map@5"))
            results = self.metric.results
            assert results is not None  # compute_metrics ran above
            self.last_images = render_validation_images(
                results, self.dataset.read_image, worst_values, **options
            )
            for name, image in self.last_images.items():
                for logger in trainer.loggers:
                    if hasattr(logger, "log_image"):
                        logger.log_image(f"val/{name}", image, step=trainer.global_step)


class EpochLossCallback(Callback):
    """The mean training loss of every epoch: ``losses`` holds ``(epochs done, mean)``."""

    def __init__(self) -> None:
        super().__init__()
        self.losses: list[tuple[int, float]] = []
        self._sum, self._count = 0.0, 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._sum, self._count = 0.0, 0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor):  # None: a skipped batch (train.on_nonfinite)
            self._sum += float(loss.detach())
            self._count += 1

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._count:
            self.losses.append((trainer.current_epoch + 1, self._sum / self._count))


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
