"""Neptune backend, our own, on the ``neptune`` 1.x client.

Neptune's hosted service (app.neptune.ai) was shut down in 2026 and Lightning removed its
``NeptuneLogger``; the 1.x client still works in ``offline`` mode (operations stored under
``logs/neptune/offline/``, uploadable with ``neptune sync`` to a self-hosted server),
``debug`` mode (in memory, nothing written) and ``async``/``sync`` against a self-hosted
server (``NEPTUNE_API_TOKEN`` and ``tracking.neptune.project``). One experiment is one
run: later stages reopen it by ``custom_run_id``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedlab.tracking.base import RunInfo, Tracker, call_with_timeout

if TYPE_CHECKING:
    from PIL import Image

LOG_DIR = Path("logs") / "neptune"
"""``NEPTUNE_DATA_DIRECTORY`` for the run (offline operations, upload queue)."""


def field_value(value: Any) -> Any:
    """Neptune stores str/int/float/bool; anything else (``None``, lists) as text.

    >>> field_value(None), field_value(0.1), field_value([1, 2])
    ('None', 0.1, '[1, 2]')
    """
    return value if isinstance(value, str | int | float | bool) else str(value)


def custom_run_id(run: RunInfo) -> str:
    """The id later stages resume by: the experiment name plus the params hash (<= 36 chars).

    >>> custom_run_id(RunInfo("exp-1", {}, {"params_hash": "0123456789"}))
    'exp-1-0123456789'
    """
    suffix = run.tags.get("params_hash", "")
    return f"{run.run_name[: 35 - len(suffix)]}-{suffix}" if suffix else run.run_name[:36]


class NeptuneTracker(Tracker):
    """Params under ``parameters/``, series under their metric names, files under ``artifacts/``."""

    name = "neptune"

    def start(self, run: RunInfo) -> str:
        cfg = self.params.tracking.neptune
        run_id = run.run_id or custom_run_id(run)
        data_dir = (self.root / LOG_DIR).resolve()
        self.run = call_with_timeout(
            lambda: self._init(run, run_id, data_dir), cfg.start_timeout, "opening the Neptune run"
        )
        if run.run_id is None:
            self.run["parameters"] = {k: field_value(v) for k, v in run.params.items()}
            self.run["embedlab/tags"] = {k: v for k, v in run.tags.items()}
        # Offline files do not record the custom id; this field ties each stage's file to it.
        self.run["embedlab/custom_run_id"] = run_id
        self.run[f"embedlab/stages/{run.stage}"] = True
        return run_id

    def _init(self, run: RunInfo, run_id: str, data_dir: Path) -> Any:
        import neptune

        cfg = self.params.tracking.neptune
        # Where offline operations go is read from the environment when the run is opened.
        previous = os.environ.get("NEPTUNE_DATA_DIRECTORY")
        os.environ["NEPTUNE_DATA_DIRECTORY"] = str(data_dir)
        try:
            return neptune.init_run(
                project=cfg.project,
                custom_run_id=run_id,
                mode=cfg.mode,
                name=run.run_name,
                tags=[f"{k}:{v}" for k, v in run.tags.items() if v],
                source_files=[],
                git_ref=False,
                capture_stdout=False,
                capture_stderr=False,
                capture_hardware_metrics=False,
                capture_traceback=False,
            )
        finally:
            if previous is None:
                os.environ.pop("NEPTUNE_DATA_DIRECTORY", None)
            else:
                os.environ["NEPTUNE_DATA_DIRECTORY"] = previous

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.run[key].append(float(value), step=step)

    def log_image(self, key: str, image: Image.Image, step: int) -> None:
        from neptune.types import File

        self.run[key].append(File.as_image(image), step=step, description=f"step {step}")

    def log_summary(self, metrics: Mapping[str, float]) -> None:
        for key, value in metrics.items():  # field by field: a later stage's facts add
            self.run[f"summary/{key}"] = float(value)

    def log_artifact(self, path: Path) -> None:
        from neptune.types import File

        # The bytes, not the path: an offline run is uploaded later, the file may change.
        path = Path(path)
        files = [path]
        if path.suffix == ".safetensors" and path.with_suffix(".json").is_file():
            files.append(path.with_suffix(".json"))
        for file in files:
            content = File.from_content(file.read_bytes(), extension=file.suffix.lstrip("."))
            self.run[f"artifacts/{file.stem}"].upload(content)

    def finish(self) -> None:
        run = getattr(self, "run", None)
        if run is not None:
            self.run = None
            call_with_timeout(lambda: run.stop(seconds=20), 30.0, "closing the Neptune run")
