"""Fine-tuning controls: backbone freeze, BatchNorm statistics, backbone lr, linear warm-up.

:class:`Finetuning` tells :class:`~embedlab.lightning.ExtractorModule` which submodule is
the pretrained backbone and how to treat it; :func:`warmup_schedule` is the per-step
learning-rate schedule with a linear warm-up. ``train.finetune`` in ``params.yaml``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn


def batchnorm_layers(module: nn.Module) -> Iterator[nn.Module]:
    """Every BatchNorm layer of ``module`` (timm's ``BatchNormAct2d`` included).

    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU())
    >>> len(list(batchnorm_layers(net)))
    1
    """
    return (m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))


@dataclass
class Finetuning:
    """How the backbone is treated while the rest of the model trains.

    Args:
        backbone: the pretrained part of the model (a submodule of it).
        freeze_epochs: epochs ``0 .. n-1`` the backbone is frozen: no gradient (so no
            optimizer update, weight decay included) and eval mode (BatchNorm statistics
            kept).
        batchnorm: ``"frozen"``: the backbone's BatchNorm layers stay in eval mode for the
            whole fit; ``"train"``: they follow the module's mode.
        backbone_lr: the backbone's learning rate; None: the optimizer's, like the rest.

    >>> net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    >>> plan = Finetuning(net, freeze_epochs=1, batchnorm="frozen")
    >>> plan.apply(epoch=0, training=True)
    >>> net.training, net[0].weight.requires_grad
    (False, False)
    >>> plan.apply(epoch=1, training=True)
    >>> net.training, net[1].training, net[0].weight.requires_grad
    (True, False, True)
    """

    backbone: nn.Module
    freeze_epochs: int = 0
    batchnorm: Literal["train", "frozen"] = "train"
    backbone_lr: float | None = None

    def frozen_at(self, epoch: int) -> bool:
        """Whether the backbone is frozen during ``epoch`` (0-based)."""
        return epoch < self.freeze_epochs

    def apply(self, epoch: int, training: bool) -> None:
        """Set the backbone's ``requires_grad`` and modes for ``epoch``.

        ``training`` is the mode of the whole model; in eval mode only ``requires_grad`` is
        set.
        """
        frozen = self.frozen_at(epoch)
        for parameter in self.backbone.parameters():
            parameter.requires_grad_(not frozen)
        if not training:
            return
        self.backbone.train(not frozen)
        if not frozen and self.batchnorm == "frozen":
            for layer in batchnorm_layers(self.backbone):
                layer.eval()

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """The optimizer's groups for ``model``: one (as without fine-tuning) when the
        backbone has no lr of its own, else the backbone at ``backbone_lr`` and the rest
        (the head) at the optimizer's lr.

        >>> net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
        >>> groups = Finetuning(net[0], backbone_lr=0.1).param_groups(net)
        >>> [(g["name"], g.get("lr"), len(g["params"])) for g in groups]
        [('backbone', 0.1, 2), ('head', None, 2)]
        """
        if self.backbone_lr is None:
            return [{"name": "model", "params": list(model.parameters())}]
        own = {id(p) for p in self.backbone.parameters()}
        rest = [p for p in model.parameters() if id(p) not in own]
        groups: list[dict[str, Any]] = [
            {
                "name": "backbone",
                "params": list(self.backbone.parameters()),
                "lr": self.backbone_lr,
            }
        ]
        if rest:
            groups.append({"name": "head", "params": rest})
        return groups


def warmup_factor(step: int, warmup_steps: int, total_steps: int, cosine: bool) -> float:
    """Multiplier of the learning rate at ``step`` (0-based): ``(step + 1) / warmup_steps``
    during the warm-up, then 1, or a cosine from 1 to 0 over the remaining steps (as
    ``CosineAnnealingLR(T_max=total_steps)`` does without a warm-up).

    >>> [round(warmup_factor(s, 4, 8, cosine=True), 3) for s in range(9)]
    [0.25, 0.5, 0.75, 1.0, 1.0, 0.854, 0.5, 0.146, 0.0]
    >>> warmup_factor(9, 4, 8, cosine=False)
    1.0
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if not cosine:
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_schedule(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, cosine: bool
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step ``LambdaLR`` of :func:`warmup_factor` (every group keeps its own base lr).

    >>> opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    >>> schedule = warmup_schedule(opt, warmup_steps=2, total_steps=4, cosine=False)
    >>> rates = []
    >>> for _ in range(3):
    ...     rates.append(opt.param_groups[0]["lr"]); opt.step(); schedule.step()
    >>> rates
    [0.5, 1.0, 1.0]
    """
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_factor(step, warmup_steps, total_steps, cosine)
    )
