"""Weights & Biases backend: one run per experiment, resumed by id in later stages.

The mode comes from ``tracking.wandb.mode``, else ``WANDB_MODE``, else ``offline`` (works
with no account; ``wandb sync logs/wandb/offline-run-*`` uploads later). Run folders live
under ``logs/wandb/``. Every value is logged against ``trainer/global_step`` so that the
x axis is the training step in every stage. The API key is read by the client from
``WANDB_API_KEY``; it is never passed or logged by us.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedlab.tracking.base import RunInfo, Tracker, call_with_timeout

if TYPE_CHECKING:
    from PIL import Image

    from embedlab.tracking.projection import Projection

LOG_DIR = Path("logs")
"""wandb adds its own ``wandb/`` folder below this one."""
STEP_KEY = "trainer/global_step"
MAX_TAG_LENGTH = 64


def wandb_mode(configured: str | None) -> str:
    """Params, then ``WANDB_MODE``, then offline.

    >>> os.environ.pop("WANDB_MODE", None) and None
    >>> wandb_mode(None), wandb_mode("online")
    ('offline', 'online')
    """
    return configured or os.environ.get("WANDB_MODE") or "offline"


def tag_list(tags: Mapping[str, str]) -> list[str]:
    """W&B tags are plain strings (<= 64 chars): ``key:value``, empty values left out.

    >>> tag_list({"git_commit": "abc", "dvc_exp_name": ""})
    ['git_commit:abc']
    """
    return [f"{k}:{v}"[:MAX_TAG_LENGTH] for k, v in tags.items() if v]


class WandbTracker(Tracker):
    """Logs through an explicit ``Run`` object (``reinit="create_new"``, no global run)."""

    name = "wandb"
    takes_embeddings = True

    def start(self, run: RunInfo) -> str:
        import wandb

        cfg = self.params.tracking.wandb
        run_id = run.run_id or uuid.uuid4().hex[:8]
        log_dir = self.root / LOG_DIR
        log_dir.mkdir(parents=True, exist_ok=True)
        settings = wandb.Settings(
            init_timeout=cfg.init_timeout,
            silent=True,
            console="off",
            disable_git=True,
            save_code=False,
            x_disable_stats=True,
        )
        kwargs: dict[str, Any] = {
            "project": cfg.project,
            "entity": cfg.entity,
            "id": run_id,
            "resume": "allow",
            "dir": str(log_dir),
            "mode": wandb_mode(cfg.mode),
            "name": run.run_name,
            "job_type": run.stage,
            "tags": tag_list(run.tags),
            "settings": settings,
            "reinit": "create_new",
        }
        if run.run_id is None:
            kwargs["config"] = {**run.params, **{f"tags.{k}": v for k, v in run.tags.items()}}
        # init_timeout bounds the handshake; the outer deadline also covers service start-up
        self.run = call_with_timeout(
            lambda: wandb.init(**kwargs), cfg.init_timeout + 10.0, "opening the W&B run"
        )
        self.run.define_metric(STEP_KEY)
        self.run.define_metric("*", step_metric=STEP_KEY)
        return run_id

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self.run.log({**metrics, STEP_KEY: step})

    def log_image(self, key: str, image: Image.Image, step: int) -> None:
        import wandb

        self.run.log({key: wandb.Image(image, caption=f"step {step}"), STEP_KEY: step})

    def log_embeddings(self, key: str, projection: Projection, step: int) -> None:
        # A table with an embedding column: W&B's 2D projection panel plots it, the
        # thumbnails show on hover.
        import wandb

        columns = [*projection.columns, "embedding"]
        thumbs = projection.thumbnails
        if thumbs is not None:
            columns.insert(len(projection.columns), "image")
        data = []
        for i, row in enumerate(projection.rows()):
            cells: list[Any] = list(row)
            if thumbs is not None:
                cells.append(wandb.Image(thumbs[i]))
            cells.append(projection.embeddings[i].tolist())
            data.append(cells)
        self.run.log({key: wandb.Table(columns=columns, data=data), STEP_KEY: step})

    def log_summary(self, metrics: Mapping[str, float]) -> None:
        self.run.summary.update({k: float(v) for k, v in metrics.items()})

    def log_artifact(self, path: Path) -> None:
        # A copy inside the run folder: a symlink would follow later changes of the file.
        path = Path(path)
        folder = Path(self.run.dir) / "artifacts"
        folder.mkdir(parents=True, exist_ok=True)
        files = [path]
        if path.suffix == ".safetensors" and path.with_suffix(".json").is_file():
            files.append(path.with_suffix(".json"))
        for file in files:
            shutil.copy2(file, folder / file.name)
            self.run.save(str(folder / file.name), base_path=self.run.dir, policy="now")

    def finish(self) -> None:
        run = getattr(self, "run", None)
        if run is not None:
            self.run = None
            call_with_timeout(run.finish, 30.0, "closing the W&B run")
