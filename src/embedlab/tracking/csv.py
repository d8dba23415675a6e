"""CSV backend: ``logs/csv/<run id>/metrics.csv`` (step, key, value), ``summary.json`` (the
run's facts, merged across stages) and PNG images.

Dependency-free and easy to diff; also what tests read back.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedlab.tracking.base import RunInfo, Tracker

if TYPE_CHECKING:
    from PIL import Image

LOG_DIR = Path("logs") / "csv"


class CsvTracker(Tracker):
    """Append-only metric rows; resuming appends to the same file."""

    name = "csv"

    def start(self, run: RunInfo) -> str:
        run_id = run.run_id or run.run_name
        self.dir = self.root / LOG_DIR / run_id
        (self.dir / "images").mkdir(parents=True, exist_ok=True)
        if run.run_id is None:
            (self.dir / "params.json").write_text(
                json.dumps({"params": run.params, "tags": run.tags}, indent=2, default=str)
            )
        self._file = open(self.dir / "metrics.csv", "a", newline="")  # noqa: SIM115 - kept open
        self._writer = csv.writer(self._file)
        if self._file.tell() == 0:
            self._writer.writerow(["step", "key", "value"])
        return run_id

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self._writer.writerows([step, k, v] for k, v in metrics.items())

    def log_image(self, key: str, image: Image.Image, step: int) -> None:
        image.save(self.dir / "images" / f"{key.replace('/', '_')}_step{step:06d}.png")

    def log_summary(self, metrics: Mapping[str, Any]) -> None:
        path = self.dir / "summary.json"
        summary = json.loads(path.read_text()) if path.is_file() else {}
        summary.update(metrics)  # each stage adds its facts
        tmp = path.with_name(".summary.json.tmp")
        tmp.write_text(json.dumps(summary, indent=2))
        tmp.replace(path)

    def finish(self) -> None:
        handle = getattr(self, "_file", None)
        if handle is not None and not handle.closed:
            handle.close()
