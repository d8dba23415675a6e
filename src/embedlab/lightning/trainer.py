"""The one place a ``lightning.Trainer`` is configured from ``train.trainer``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import lightning as L

if TYPE_CHECKING:
    from embedlab.config import TrainerParams


def build_trainer(cfg: TrainerParams, **options: Any) -> L.Trainer:
    """A Trainer on ``cfg``'s accelerator, devices, strategy, nodes and precision.

    ``options`` are further ``Trainer`` arguments (they win over ``cfg``). Batch samplers
    of the project shard themselves (:class:`~embedlab.data.samplers.BalanceSampler`,
    :class:`~embedlab.data.samplers.ShardedBatchSampler`), so Lightning's distributed
    sampler is off.

    >>> from embedlab.config import TrainerParams
    >>> trainer = build_trainer(TrainerParams(), logger=False, enable_progress_bar=False)
    >>> trainer.num_devices, type(trainer.accelerator).__name__
    (1, 'CPUAccelerator')
    """
    settings: dict[str, Any] = {
        "accelerator": cfg.accelerator,
        "devices": cfg.devices,
        "strategy": cfg.strategy,
        "num_nodes": cfg.num_nodes,
        "precision": cfg.precision,
        "deterministic": cfg.deterministic,
        "use_distributed_sampler": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
    }
    settings.update(options)
    return L.Trainer(**settings)
