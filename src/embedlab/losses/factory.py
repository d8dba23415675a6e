"""``params.yaml`` -> the training criterion: the loss of ``train.loss`` with its miner."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from torch import nn

from embedlab.registries import LOSSES, MINERS

if TYPE_CHECKING:
    from embedlab.config import Params


def takes_class_weights(name: str) -> bool:
    """Whether the loss registered as ``name`` learns class weights (needs the classes).

    >>> takes_class_weights("arcface"), takes_class_weights("supcon")
    (True, False)
    """
    return bool(getattr(LOSSES.get(name), "takes_class_weights", False))


def class_indices(labels: Any) -> tuple[np.ndarray, int]:
    """Labels as class indices ``0 .. C-1`` (order kept), and ``C``.

    Class-weight losses index their weights by label. The map is monotonic, so the
    batches a sampler draws and every label comparison stay as they were.

    >>> codes, n = class_indices([7, 3, 7, 12])
    >>> codes.tolist(), n
    ([1, 0, 1, 2], 3)
    """
    classes, codes = np.unique(np.asarray(labels), return_inverse=True)
    return codes.astype(np.int64).reshape(-1), len(classes)


def build_criterion(params: Params, num_classes: int, embedding_size: int) -> nn.Module:
    """The criterion ``train.loss`` and ``train.miner`` describe, with ``last_logs``.

    - ``triplet``: :class:`~embedlab.losses.TripletLossWithMiner` with the miner.
    - pair losses (``contrastive``, ``multi_similarity``, ``supcon``): the miner picks
      the pairs; ``all`` means every pair (PML's default, no miner). With
      ``train.miner.memory_size > 0`` they are wrapped in
      :class:`~embedlab.losses.CrossBatchMemory`.
    - class-weight losses (``arcface``, ``subcenter_arcface``, ``proxy_anchor``): built with
      ``num_classes`` and ``embedding_size``, no miner; labels must be class indices
      (:func:`class_indices`).

    >>> from embedlab.config import parse_params
    >>> params = parse_params({"train": {"loss": {"name": "proxy_anchor"}}})
    >>> build_criterion(params, num_classes=5, embedding_size=8).proxies.shape
    torch.Size([5, 8])
    >>> params = parse_params({"train": {"loss": {"name": "supcon"}, "miner": {"memory_size": 64}}})
    >>> build_criterion(params, num_classes=5, embedding_size=8).memory
    MemoryBank(embedding_size=8, memory_size=64)
    """
    from embedlab.losses.cross_batch_memory import CrossBatchMemory

    loss_cfg, miner_cfg = params.train.loss, params.train.miner
    arguments = loss_cfg.arguments()
    if takes_class_weights(loss_cfg.name):
        arguments.update(num_classes=num_classes, embedding_size=embedding_size)
        return LOSSES.build(loss_cfg.name, **arguments)
    miner = _build_miner(params, pair_loss=loss_cfg.name != "triplet")
    if loss_cfg.name == "triplet":
        return LOSSES.build("triplet", miner=miner, need_logs=True, **arguments)
    if miner_cfg.memory_size:
        loss = LOSSES.build(loss_cfg.name, **arguments)
        return CrossBatchMemory(loss, embedding_size, miner_cfg.memory_size, miner=miner)
    return LOSSES.build(loss_cfg.name, miner=miner, **arguments)


def _build_miner(params: Params, pair_loss: bool) -> Any:
    cfg = params.train.miner
    if cfg.name == "all":
        if pair_loss:
            return None  # every pair: PML's default
        return MINERS.build("all", max_output_triplets=cfg.max_output_triplets)
    if cfg.name == "multi_similarity":
        return MINERS.build("multi_similarity", epsilon=cfg.epsilon)
    return MINERS.build(cfg.name)
