"""``ExtractorModule``: the training loop of an extractor with a metric-learning criterion."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import nn


class ExtractorModule(L.LightningModule):
    """Train ``model`` with ``criterion(embeddings, labels)``; log loss and miner stats every step.

    ``optimizer`` is an optimizer instance (OML's pattern) or a factory taking the
    parameters; ``scheduler`` likewise takes the optimizer. ``validation_step`` returns the
    batch with its ``embeddings`` so :class:`MetricValCallback` can accumulate them.

    >>> from embedlab.losses import TripletLossWithMiner
    >>> model = nn.Linear(4, 2)
    >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> module = ExtractorModule(model, TripletLossWithMiner(0.1), optimizer)
    >>> module.input_key, module.labels_key
    ('input_tensors', 'labels')
    """

    def __init__(
        self,
        model: nn.Module,
        criterion: nn.Module,
        optimizer: torch.optim.Optimizer | Callable[[Any], torch.optim.Optimizer],
        scheduler: Callable[[torch.optim.Optimizer], Any] | None = None,
        input_key: str = "input_tensors",
        labels_key: str = "labels",
        embeddings_key: str = "embeddings",
    ) -> None:
        super().__init__()
        self.model = model
        self.criterion = criterion
        self._optimizer = optimizer
        self._scheduler = scheduler
        self.input_key = input_key
        self.labels_key = labels_key
        self.embeddings_key = embeddings_key

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        embeddings = self.model(batch[self.input_key])
        loss = self.criterion(embeddings, batch[self.labels_key])
        size = len(embeddings)
        logs = {"train/loss": loss.detach()}
        for key, value in (getattr(self.criterion, "last_logs", None) or {}).items():
            logs[f"train/{key}"] = float(value)
        logs["train/lr"] = (
            self.trainer.optimizers[0].param_groups[0]["lr"] if self._trainer else 0.0
        )
        self.log_dict(logs, on_step=True, on_epoch=False, prog_bar=False, batch_size=size)
        self.log("loss", loss.detach(), prog_bar=True, logger=False, batch_size=size)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        embeddings = self.model(batch[self.input_key])
        return {**batch, self.embeddings_key: embeddings}

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        return {"idx": batch["idx"], self.embeddings_key: self.model(batch[self.input_key])}

    def configure_optimizers(self) -> Any:
        optimizer = self._optimizer
        if not isinstance(optimizer, torch.optim.Optimizer):
            optimizer = optimizer(self.model.parameters())
        if self._scheduler is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": self._scheduler(optimizer), "interval": "step"},
        }
