"""Training of the pairwise re-ranker on mined pairs: binary cross-entropy on same/different.

:func:`fit_pairwise` is the loop the ``rerank`` stage runs; it is a function of its own so
that a small task can train a re-ranker in a test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from embedlab.embedding.reranker import ImageBatch
from embedlab.errors import EmbedlabError
from embedlab.models.pairwise import PairwiseModel

__all__ = ["EpochStats", "Pairs", "PairwiseTraining", "fit_pairwise"]


class Pairs(Protocol):
    """Item pairs to train on: positions ``anchors[i]``, ``others[i]``, and the target."""

    anchors: torch.Tensor
    others: torch.Tensor
    different: torch.Tensor


@dataclass(frozen=True)
class EpochStats:
    """Mean BCE loss and pair accuracy (distance > 0.5 means "different") of one epoch."""

    epoch: int
    step: int
    loss: float
    pair_accuracy: float


@dataclass(frozen=True)
class PairwiseTraining:
    """Settings of :func:`fit_pairwise` (``rerank.*`` in params.yaml)."""

    epochs: int = 2
    batch_size: int = 64
    lr: float = 1e-4
    head_lr: float = 1e-3
    freeze_backbone: bool = False
    seed: int = 0


def fit_pairwise(
    model: PairwiseModel,
    images: ImageBatch,
    pairs: Pairs,
    settings: PairwiseTraining,
    on_epoch: Callable[[EpochStats], None] | None = None,
) -> list[EpochStats]:
    """Train ``model`` on ``pairs`` (target: ``pairs.different``); return each epoch's stats.

    ``pairs`` is any value with ``anchors``, ``others`` (item positions) and ``different``
    (bool) tensors, such as :class:`embedlab.miners.neighbour_pairs.NeighbourPairs`.

    Every batch runs each of its distinct images through the backbone once, then the head
    on its pairs. Batches are drawn in a seeded order.

    Example:
        >>> from embedlab.models import TimmExtractor
        >>> model = PairwiseModel.from_extractor(TimmExtractor("resnet10t", input_size=8), 4)
        >>> pixels = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
        >>> from types import SimpleNamespace
        >>> pairs = SimpleNamespace(anchors=torch.tensor([0, 1]), others=torch.tensor([1, 2]),
        ...                         different=torch.tensor([False, True]))
        >>> stats = fit_pairwise(model, lambda p: pixels[p], pairs, PairwiseTraining(epochs=2))
        >>> [(s.epoch, s.step) for s in stats]
        [(0, 1), (1, 2)]
    """
    n_pairs = int(pairs.anchors.numel())
    if n_pairs == 0:
        raise EmbedlabError("rerank: no pairs were mined (is the train split empty?)")
    if settings.freeze_backbone:
        model.backbone.requires_grad_(False)
    groups = [{"params": list(model.head.parameters()), "lr": settings.head_lr}]
    if not settings.freeze_backbone:
        groups.append({"params": list(model.backbone.parameters()), "lr": settings.lr})
    optimizer = torch.optim.AdamW(groups)
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(settings.seed)
    history: list[EpochStats] = []
    step = 0
    for epoch in range(settings.epochs):
        model.train()
        if settings.freeze_backbone:
            model.backbone.eval()  # its batch-norm statistics stay the extractor's
        order = torch.randperm(n_pairs, generator=generator)
        total_loss, correct = 0.0, 0
        for batch in order.split(settings.batch_size):
            loss, right = _step(model, images, pairs, batch, device)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            total_loss += float(loss.detach()) * batch.numel()
            correct += right
        stats = EpochStats(epoch, step, total_loss / n_pairs, correct / n_pairs)
        history.append(stats)
        if on_epoch is not None:
            on_epoch(stats)
    model.eval()
    return history


def _step(
    model: PairwiseModel,
    images: ImageBatch,
    pairs: Pairs,
    batch: torch.Tensor,
    device: torch.device,
) -> tuple[torch.Tensor, int]:
    """The BCE loss of one batch of pairs and how many it gets right."""
    anchors, others = pairs.anchors[batch], pairs.others[batch]
    target = pairs.different[batch].float().to(device)
    logits = model.pair_logits(images, anchors, others)
    loss = F.binary_cross_entropy_with_logits(logits, target)
    right = int(((logits > 0).float() == target).sum())
    return loss, right
