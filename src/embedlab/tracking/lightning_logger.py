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

    def __init__(self, hub: TrackerHub, step_offset: int = 0) -> None:
        super().__init__()
        self.hub = hub
        self.step_offset = step_offset

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
        clean = {k: v for k, v in metrics.items() if k != "epoch"}
        if clean:
            self.hub.log_metrics(clean, step=(step or 0) + self.step_offset)

    @rank_zero_only
    def log_image(self, key: str, image: Image.Image, step: int) -> None:
        self.hub.log_image(key, image, step=step + self.step_offset)
