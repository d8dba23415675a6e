"""``ExtractorModule``: the training loop of an extractor, and its embedding steps."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import nn

from embedlab.data import keys
from embedlab.errors import EmbedlabError
from embedlab.lightning.finetune import Finetuning


class TrainingDiverged(EmbedlabError):
    """The loss became NaN or inf: the stage stops with one line (lower the learning rate)."""


def configured_lr(trainer: L.Trainer) -> float | None:
    """The learning rate of ``train.optimizer.lr`` (before any schedule), if training."""
    if not trainer.optimizers:
        return None
    group = trainer.optimizers[0].param_groups[0]
    return float(group.get("initial_lr", group["lr"]))


def diverged_message(step: int, what: str, lr: float | None) -> str:
    """``training diverged at step N: <what>; lower train.optimizer.lr (now X) ...``.

    >>> print(diverged_message(7, "loss is nan", 1000.0))
    training diverged at step 7: loss is nan; lower train.optimizer.lr (now 1000), or set ...
    """
    now = f" (now {lr:g})" if lr is not None else ""
    return (
        f"training diverged at step {step}: {what}; lower train.optimizer.lr{now}, "
        "or set train.on_nonfinite: skip_batch"
    )


class ExtractorModule(L.LightningModule):
    """Train ``model`` with ``criterion(embeddings, labels)``; log loss and its stats each step.

    ``optimizer`` is an optimizer instance (OML's pattern) or a factory taking the
    parameters; ``scheduler`` likewise takes the optimizer. Validation and prediction
    batches are :class:`~embedlab.data.datasets.InferenceImages` batches (``idx`` and
    ``uint8`` images); ``inference_transform`` finishes them on the batch (see
    :func:`~embedlab.data.transforms.split_transform`), and both steps return
    ``{idx, embeddings}`` for :class:`~embedlab.lightning.EmbeddingCollector`. A module
    with no criterion only embeds (the validate and embed stages).
    A criterion with parameters (the class weights of ArcFace, ProxyAnchor...) is trained
    by the same optimizer, in a param group of its own at ``criterion_lr`` (default: the
    optimizer's lr); being part of the module, the weights are in its checkpoints, not in
    the exported extractor. ``finetune`` (:class:`~embedlab.lightning.Finetuning`) names
    the pretrained backbone: frozen for its first epochs, BatchNorm statistics kept, its
    own learning rate; every group's lr is logged as ``train/lr`` (the first group) and
    ``train/lr_<group>``.

    >>> from embedlab.losses import TripletLossWithMiner
    >>> model = nn.Linear(4, 2)
    >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> module = ExtractorModule(model, TripletLossWithMiner(0.1), optimizer)
    >>> sorted(module.embed_step({"idx": torch.tensor([0]), "input_tensors": torch.ones(1, 4)}))
    ['embeddings', 'idx']
    """

    def __init__(
        self,
        model: nn.Module,
        criterion: nn.Module | None = None,
        optimizer: torch.optim.Optimizer | Callable[[Any], torch.optim.Optimizer] | None = None,
        scheduler: Callable[[torch.optim.Optimizer], Any] | None = None,
        inference_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        on_nonfinite: str = "stop",
        channels_last: bool = False,
        criterion_lr: float | None = None,
        finetune: Finetuning | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.criterion = criterion
        self._optimizer = optimizer
        self._scheduler = scheduler
        self.inference_transform = inference_transform
        self.on_nonfinite = on_nonfinite
        self.channels_last = channels_last
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.skipped_batches = 0
        self.criterion_lr = criterion_lr
        self.finetune = finetune

    def train(self, mode: bool = True) -> ExtractorModule:
        """``nn.Module.train``, then the backbone's frozen parts back in eval mode."""
        super().train(mode)
        if self.finetune is not None:
            self.finetune.apply(self.current_epoch, training=mode)
        return self

    def on_train_epoch_start(self) -> None:
        if self.finetune is not None:
            self.finetune.apply(self.current_epoch, training=self.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        if self.criterion is None:
            raise RuntimeError("ExtractorModule: training needs a criterion")
        embeddings = self.model(self._layout(batch[keys.INPUT]))
        loss = self.criterion(embeddings, batch[keys.LABELS])
        if not torch.isfinite(loss.detach()):
            # Checked before anything is logged: no NaN reaches a tracker or a report.
            if self.on_nonfinite == "skip_batch":
                self.skipped_batches += 1
                return None  # Lightning skips backward and the optimizer step
            raise TrainingDiverged(self._diverged_message(loss))
        size = len(embeddings)
        logs = {"train/loss": loss.detach()}
        for key, value in (getattr(self.criterion, "last_logs", None) or {}).items():
            logs[f"train/{key}"] = float(value)
        logs.update(self._learning_rates())
        if self.finetune is not None and self.finetune.freeze_epochs:
            logs["train/backbone_frozen"] = float(self.finetune.frozen_at(self.current_epoch))
        self.log_dict(logs, on_step=True, on_epoch=False, prog_bar=False, batch_size=size)
        self.log("loss", loss.detach(), prog_bar=True, logger=False, batch_size=size)
        return loss

    def _learning_rates(self) -> dict[str, float]:
        """``train/lr`` (the first param group, the backbone's) and ``train/lr_<group>``."""
        if not self._trainer or not self.trainer.optimizers:
            return {"train/lr": 0.0}
        groups = self.trainer.optimizers[0].param_groups
        rates = {"train/lr": float(groups[0]["lr"])}
        for group in groups[1:] if len(groups) > 1 else []:
            rates[f"train/lr_{group.get('name', 'group')}"] = float(group["lr"])
        return rates

    def _diverged_message(self, loss: torch.Tensor) -> str:
        value = "nan" if torch.isnan(loss.detach()) else "inf"
        lr = configured_lr(self.trainer) if self._trainer else None
        return diverged_message(self.global_step, f"loss is {value}", lr)

    def embed_step(self, batch: dict[str, Any]) -> dict[str, Any]:
        """``{idx, embeddings}`` of an inference batch."""
        images = batch[keys.INPUT]
        if self.inference_transform is not None:
            images = self.inference_transform(images)
        return {keys.IDX: batch[keys.IDX], keys.EMBEDDINGS: self.model(self._layout(images))}

    def _layout(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last and images.ndim == 4:
            return images.contiguous(memory_format=torch.channels_last)
        return images

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        return self.embed_step(batch)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        return self.embed_step(batch)

    def configure_optimizers(self) -> Any:
        optimizer = self._optimizer
        if optimizer is None:
            raise RuntimeError("ExtractorModule: training needs an optimizer")
        if not isinstance(optimizer, torch.optim.Optimizer):
            optimizer = optimizer(self._param_groups())
        if self._scheduler is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": self._scheduler(optimizer), "interval": "step"},
        }

    def _param_groups(self) -> Any:
        """The model's group(s), then the criterion's class weights at ``criterion_lr``."""
        criterion_params = self.criterion.parameters() if self.criterion is not None else []
        class_weights = [p for p in criterion_params if p.requires_grad]
        if self.finetune is not None:
            groups = self.finetune.param_groups(self.model)
        elif class_weights:
            groups = [{"params": list(self.model.parameters())}]
        else:
            return self.model.parameters()  # one group, as the optimizer makes it
        if class_weights:
            group: dict[str, Any] = {"name": "class_weights", "params": class_weights}
            if self.criterion_lr is not None:
                group["lr"] = self.criterion_lr
            groups.append(group)
        return groups
