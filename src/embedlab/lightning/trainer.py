"""The one place a ``lightning.Trainer`` is configured from ``train.trainer``."""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING, Any

import lightning as L
from lightning.fabric.utilities.exceptions import MisconfigurationException

from embedlab.config import ParamsError

if TYPE_CHECKING:
    from embedlab.config import TrainerParams

LIGHTNING_LOG = "lightning.pytorch.utilities.rank_zero"
"""The logger Lightning's ``rank_zero_info`` lines (device lists, tips) go to."""


class _NoLitLoggerTip(logging.Filter):
    """Drops Lightning's advertisement for its cloud logger, printed by every Trainer."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


def quiet_lightning() -> None:
    """Silence two messages Lightning prints on every run, and nothing else.

    - the "Tip: ... try installing litlogger" advertisement of each new Trainer;
    - torch's ``LeafSpec`` deprecation warning, raised by Lightning's own ``_pytree`` helper
      at every validation (Lightning's code, not ours: a user can do nothing about it).
    """
    log = logging.getLogger(LIGHTNING_LOG)
    if not any(isinstance(f, _NoLitLoggerTip) for f in log.filters):
        log.addFilter(_NoLitLoggerTip())
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
    )


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
    quiet_lightning()
    try:
        return L.Trainer(**settings)
    except (MisconfigurationException, ValueError, ImportError) as exc:
        # accelerator, devices, strategy and precision that do not fit this machine
        raise ParamsError(f"params.yaml: train.trainer: {_first_line(exc)}") from None
    except TypeError as exc:
        if "keyword argument" in str(exc):  # our own call is wrong: a bug, not the params
            raise
        raise ParamsError(f"params.yaml: train.trainer: {_first_line(exc)}") from None


def _first_line(exc: Exception) -> str:
    """``exc``'s message on one line (Lightning's messages run over several).

    >>> _first_line(ValueError("no GPU.\\nInstall one."))
    'no GPU. Install one.'
    """
    return " ".join(str(exc).split()) or type(exc).__name__
