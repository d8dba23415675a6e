"""DVCLive backend: curves, images and a summary in DVC's own file formats.

Each stage writes ``<tracking.dvclive.dir>/<stage>/`` (``dvclive/train/`` ...):
``plots/metrics/<name>.tsv`` (step, value) curves, ``plots/images/<name>/<step>.png``
pictures, ``metrics.json`` (the last value of each metric) and ``params.yaml``. DVC
lets one stage own each output, hence a folder per stage rather than one shared run.
``dvcyaml=False``: dvc.yaml is never rewritten behind the user's back; declare the
folders in the stages (see docs/trackers.md) for ``dvc exp show`` and ``dvc plots diff``.
Artifacts are not copied: the model and reports already are DVC outputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from embedlab.tracking.base import RunInfo, Tracker

if TYPE_CHECKING:
    from PIL import Image


def stage_dir(root: Path, base: str, stage: str) -> Path:
    """The folder a stage's DVCLive files go to.

    >>> stage_dir(Path("."), "dvclive", "train").as_posix()
    'dvclive/train'
    """
    return root / base / stage


class DvcliveTracker(Tracker):
    """A ``dvclive.Live`` per stage; the run id is the experiment (run) name."""

    name = "dvclive"

    def start(self, run: RunInfo) -> str:
        from dvclive import Live

        folder = stage_dir(self.root, self.params.tracking.dvclive.dir, run.stage)
        # resume=False starts the stage's folder afresh, as `dvc repro` does with outputs;
        # `embedlab sync` (run.replay) adds to it instead.
        self.live = Live(
            dir=str(folder),
            resume=run.replay,
            report=None,
            save_dvc_exp=False,
            dvcyaml=False,
            monitor_system=False,
        )
        self.live.log_params({**run.params, **{f"tags.{k}": v for k, v in run.tags.items()}})
        return run.run_id or run.run_name

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self.live.step = step
        for key, value in metrics.items():
            self.live.log_metric(key, float(value))

    def log_image(self, key: str, image: Image.Image, step: int) -> None:
        self.live.log_image(f"{key}/{step:06d}.png", image)

    def log_summary(self, metrics: Mapping[str, float]) -> None:
        for key, value in metrics.items():  # metrics.json only, the curves already have them
            self.live.log_metric(key, float(value), plot=False)
        self.live.make_summary()

    def finish(self) -> None:
        live = getattr(self, "live", None)
        if live is not None:
            self.live = None
            live.make_summary()
            live.end()
