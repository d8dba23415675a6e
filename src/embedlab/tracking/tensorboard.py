"""TensorBoard backend: event files under ``logs/tensorboard/<run id>/``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embedlab.tracking.base import RunInfo, Tracker

if TYPE_CHECKING:
    from PIL import Image

LOG_DIR = Path("logs") / "tensorboard"


class TensorBoardTracker(Tracker):
    """Scalars, images and the hparams view; resuming reopens the same folder."""

    name = "tensorboard"

    def start(self, run: RunInfo) -> str:
        from torch.utils.tensorboard import SummaryWriter

        run_id = run.run_id or _unique_dir(self.root / LOG_DIR, run.run_name)
        self.log_dir = self.root / LOG_DIR / run_id
        self.writer = SummaryWriter(log_dir=str(self.log_dir))
        self._params = run.params
        if run.run_id is None:
            text = "\n".join(f"    {k}: {v}" for k, v in {**run.tags, **run.params}.items())
            self.writer.add_text("params", text, 0)
        return run_id

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)

    def log_image(self, key: str, image: Image.Image, step: int) -> None:
        self.writer.add_image(key, np.asarray(image.convert("RGB")), step, dataformats="HWC")

    def log_summary(self, metrics: Mapping[str, float]) -> None:
        # Registers the run in the HPARAMS tab with its final metrics so runs compare there.
        hparams: dict[str, Any] = {
            k: v if isinstance(v, int | float | str | bool) else str(v)
            for k, v in self._params.items()
        }
        self.writer.add_hparams(
            hparams, {f"hparam/{k}": float(v) for k, v in metrics.items()}, run_name="."
        )

    def finish(self) -> None:
        writer = getattr(self, "writer", None)
        if writer is not None:
            writer.flush()
            writer.close()


def _unique_dir(parent: Path, name: str) -> str:
    candidate, n = name, 1
    while (parent / candidate).exists():
        n += 1
        candidate = f"{name}-{n}"
    return candidate
