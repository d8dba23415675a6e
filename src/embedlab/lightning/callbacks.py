"""``MetricValCallback``: retrieval metrics (and pictures) at every validation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from PIL import Image

from embedlab.metrics import EmbeddingMetrics
from embedlab.tracking.names import metric_names
from embedlab.viz import render_validation_images


def _detach(batch: dict[str, Any]) -> dict[str, Any]:
    return {k: v.detach().cpu() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


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

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loaders = trainer.val_dataloaders
        loader = loaders[0] if isinstance(loaders, list | tuple) else loaders
        self.metric.setup(num_samples=len(loader.dataset))

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self.metric.update_data(_detach(outputs))

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = self.metric.compute_metrics()
        pl_module.log_dict(metric_names(metrics), on_epoch=True, batch_size=1)
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
