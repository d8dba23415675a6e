"""A Lightning ``Logger`` that forwards to a :class:`TrackerHub`.

Lightning stays the training loop; our hub stays the single path to every backend, so
training, validate and embed log the same names into the same runs.
"""

from __future__ import annotations

from argparse import Namespace
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from lightning.pytorch.loggers.logger import Logger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

if TYPE_CHECKING:
    from PIL import Image

    from embedlab.tracking.base import TrackerHub


class HubLogger(Logger):
    """Lightning logger over a :class:`TrackerHub` (rank 0 only)."""

    def __init__(self, hub: TrackerHub) -> None:
        super().__init__()
        self.hub = hub
        self._steps_done = 0

    @property
    def name(self) -> str:
        return "embedlab"

    @property
    def version(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.hub.run_ids.items()) or "0"

    @rank_zero_only
    def log_hyperparams(
        self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any
    ) -> None:
        """Params are logged once by the stage from params.yaml, not from the module."""

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Per-step values at their batch index; validation at the number of steps done.

        Lightning stamps an epoch-end validation with the last batch index (n - 1); its
        pictures and the validate stage use the global step (n). Validation-only dicts are
        moved to n so that a validation's metrics and pictures share one step everywhere.

        >>> from embedlab.tracking.base import TrackerHub
        >>> class Hub(TrackerHub):
        ...     def log_metrics(self, metrics, step):
        ...         print(sorted(metrics), step)
        >>> logger = HubLogger(Hub([]))
        >>> logger.log_metrics({"val/OVERALL/cmc@1": 0.1}, step=0)
        ['val/OVERALL/cmc@1'] 0
        >>> logger.log_metrics({"train/loss": 1.0, "epoch": 0}, step=74)
        ['train/loss'] 74
        >>> logger.log_metrics({"val/OVERALL/cmc@1": 0.5, "epoch": 0}, step=74)
        ['val/OVERALL/cmc@1'] 75
        """
        clean = {k: v for k, v in metrics.items() if k != "epoch"}
        if not clean:
            return
        step = step or 0
        if any(k.startswith("train/") for k in clean):
            self._steps_done = max(self._steps_done, step + 1)
        else:
            step = max(step, self._steps_done)
        self.hub.log_metrics(clean, step=step)

    @rank_zero_only
    def log_image(self, key: str, image: Image.Image, step: int) -> None:
        self.hub.log_image(key, image, step=step)
