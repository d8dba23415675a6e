"""The criterion of the train stage: ``train.loss`` and ``train.miner`` -> one module.

Each loss declares its kind in :data:`embedlab.registries.LOSSES`
(:class:`~embedlab.registries.LossKind`); this module reads it there and nowhere else
names a loss. ``pml.*`` names build pytorch-metric-learning components (with their
statistics collected) wrapped in :class:`~embedlab.losses.PmlLoss` /
:class:`~embedlab.miners.pml.PmlMiner`.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from embedlab.config import DistanceParams, Params, ReducerParams
from embedlab.errors import EmbedlabError
from embedlab.losses import CrossBatchMemory, PmlLoss
from embedlab.miners import Miner, PmlMiner
from embedlab.registries import DISTANCES, LOSSES, MINERS, PML_PREFIX, REDUCERS, TRIPLET, LossKind
from embedlab.registry import Registry


def build_criterion(params: Params, num_classes: int, embedding_size: int) -> torch.nn.Module:
    """The criterion ``train.loss`` and ``train.miner`` describe, with ``last_logs``.

    By the loss's kind:

    - ``triplet``: :class:`~embedlab.losses.TripletLossWithMiner` with the miner.
    - ``pair`` (``contrastive``, ``multi_similarity``, ``supcon``, PML's pair losses): the
      miner picks the pairs; ``all`` means every pair (PML's default, no miner). With
      ``train.miner.memory_size > 0`` they are wrapped in
      :class:`~embedlab.losses.CrossBatchMemory`.
    - ``class_weights`` (``arcface``, ``subcenter_arcface``, ``proxy_anchor``,
      ``pml.CosFaceLoss``...): built with ``num_classes`` and ``embedding_size``, no
      miner; labels must be class indices (:func:`embedlab.stages.train.class_indices`).
    - ``tuple``, ``whole_batch``: PML losses with a miner's pairs or triplets, or without.

    >>> from embedlab.config import parse_params
    >>> params = parse_params({"train": {"loss": {"name": "proxy_anchor"}}})
    >>> build_criterion(params, num_classes=5, embedding_size=8).proxies.shape
    torch.Size([5, 8])
    >>> params = parse_params({"train": {"loss": {"name": "supcon"}, "miner": {"memory_size": 64}}})
    >>> build_criterion(params, num_classes=5, embedding_size=8).memory
    MemoryBank(embedding_size=8, memory_size=64)
    >>> params = parse_params({"train": {"loss": {"name": "pml.CircleLoss", "pml": {"m": 0.3}}}})
    >>> build_criterion(params, num_classes=5, embedding_size=8).loss.m
    0.3
    """
    loss_cfg, miner_cfg = params.train.loss, params.train.miner
    kind: LossKind = LOSSES.tag(loss_cfg.name)
    miner = build_train_miner(params)
    if loss_cfg.name.startswith(PML_PREFIX):
        loss = PmlLoss(_build_pml_loss(params, num_classes, embedding_size))
        if miner_cfg.memory_size:
            return CrossBatchMemory(loss, embedding_size, miner_cfg.memory_size, miner=miner)
        loss.miner = miner
        return loss
    arguments = loss_cfg.arguments()
    if kind.class_weights:
        return LOSSES.build(
            loss_cfg.name, num_classes=num_classes, embedding_size=embedding_size, **arguments
        )
    if kind == TRIPLET:
        return LOSSES.build(loss_cfg.name, miner=miner, need_logs=True, **arguments)
    if miner_cfg.memory_size:
        loss = LOSSES.build(loss_cfg.name, **arguments)
        return CrossBatchMemory(loss, embedding_size, miner_cfg.memory_size, miner=miner)
    return LOSSES.build(loss_cfg.name, miner=miner, **arguments)


def build_train_miner(params: Params) -> Miner | None:
    """The miner ``train.miner`` names, for the loss of ``train.loss`` (``None``: no miner).

    ``all`` is every pair or triplet: ``None`` (the loss's own default) except for the
    triplet loss, which takes :class:`~embedlab.miners.AllTripletsMiner`. Losses that take
    no miner get ``None``.

    >>> from embedlab.config import parse_params
    >>> build_train_miner(parse_params({"train": {"miner": {"name": "pml.BatchHardMiner"}}}))
    PmlMiner(BatchHardMiner(...))
    """
    loss_cfg, cfg = params.train.loss, params.train.miner
    kind: LossKind = LOSSES.tag(loss_cfg.name)
    if not kind.miner or (cfg.name == "all" and kind != TRIPLET):
        return None
    if not cfg.name.startswith(PML_PREFIX):
        return MINERS.build(cfg.name, **cfg.arguments())
    parts = _pml_parts({"distance": (DISTANCES, cfg.distance)}, "train.miner")
    return PmlMiner(
        _build_pml(MINERS, cfg.name, "train.miner.pml", collect_stats=True, **parts, **cfg.pml)
    )


def _build_pml_loss(params: Params, num_classes: int, embedding_size: int) -> torch.nn.Module:
    """The PML loss of ``train.loss`` with its distance and reducer, collecting statistics."""
    cfg = params.train.loss
    kwargs: dict[str, Any] = {}
    if LOSSES.tag(cfg.name).class_weights:
        # PML's P2SGradLoss calls the embedding size descriptors_dim.
        parameters = inspect.signature(LOSSES.get(cfg.name)).parameters
        width = "descriptors_dim" if "descriptors_dim" in parameters else "embedding_size"
        kwargs = {"num_classes": num_classes, width: embedding_size}
    parts = _pml_parts(
        {"distance": (DISTANCES, cfg.distance), "reducer": (REDUCERS, cfg.reducer)}, "train.loss"
    )
    kwargs.update(parts, **cfg.arguments())
    return _build_pml(LOSSES, cfg.name, "train.loss.pml", collect_stats=True, **kwargs)


def _pml_parts(
    chosen: dict[str, tuple[Registry, DistanceParams | ReducerParams]], where: str
) -> dict[str, Any]:
    """The PML distance / reducer objects that are set (none: the component's default)."""
    parts: dict[str, Any] = {}
    for part, (registry, cfg) in chosen.items():
        if cfg.name is None:
            continue
        arguments = dict(cfg.pml)
        if registry is REDUCERS:  # ClassWeightedReducer's weights: a tensor, not a list
            arguments = {k: _tensor_if_list(v) for k, v in arguments.items()}
        parts[part] = _build_pml(
            registry, cfg.name, f"{where}.{part}.pml", collect_stats=True, **arguments
        )
    return parts


def _tensor_if_list(value: Any) -> Any:
    return torch.tensor(value, dtype=torch.float32) if isinstance(value, list) else value


def _build_pml(registry: Registry, name: str, where: str, /, **kwargs: Any) -> Any:
    """``registry.build`` for a PML class; PML's own argument checks name the key too."""
    factory = registry.get(name)  # a missing PML is a one-line error naming the extra
    try:
        return factory(**kwargs)
    except (TypeError, ValueError, AssertionError) as err:
        given = sorted(k for k in kwargs if k != "collect_stats")
        raise EmbedlabError(
            f"params.yaml: {where}: {registry.kind} {name!r} refuses the arguments {given}: {err}"
        ) from None
