"""TensorBoard backend: event files under ``logs/tensorboard/<run id>/``.

What a run's page shows first is what matters: the scalar cards hold curves only
(``train/`` and ``val/``), never single values. A run's facts (query counts, the
raw-pixel baseline, embed's rows and speed) go to its summary: ``summary.json`` in the run
folder, merged across stages, shown as the ``summary`` text card. The HPARAMS tab gets the
run's params when the run starts, with the :data:`~embedlab.tracking.names.HEADLINE`
validation curves as its metric columns (TensorBoard shows each curve's last value there),
so no ``hparam/`` one-point scalars are needed. Embeddings go to the PROJECTOR tab: each
``log_embeddings`` call is a folder ``<step>/<key>/`` (vectors, metadata, sprite) listed in
``projector_config.pbtxt``, which is merged, so another stage's or a rerun's entry stays.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embedlab.tracking.base import RunInfo, Tracker
from embedlab.tracking.names import headline_tags

if TYPE_CHECKING:
    from PIL import Image

    from embedlab.tracking.projection import Projection

LOG_DIR = Path("logs") / "tensorboard"
SUMMARY_FILE = "summary.json"
PROJECTOR_CONFIG = "projector_config.pbtxt"
SUMMARY_TAG = "summary"
HPARAM_METRICS = (*headline_tags(), "train/loss")
"""Metric columns of the HPARAMS tab: curves the run logs anyway."""


class TensorBoardTracker(Tracker):
    """Scalars, images, the summary card and the hparams view; resuming reopens the folder."""

    name = "tensorboard"
    takes_embeddings = True

    def start(self, run: RunInfo) -> str:
        from torch.utils.tensorboard import SummaryWriter

        run_id = run.run_id or _unique_dir(self.root / LOG_DIR, run.run_name)
        self.log_dir = self.root / LOG_DIR / run_id
        self.writer = SummaryWriter(log_dir=str(self.log_dir))
        if run.run_id is None:
            text = "\n".join(f"    {k}: {v}" for k, v in {**run.tags, **run.params}.items())
            self.writer.add_text("params", text, 0)
            self._write_hparams(run.params)
        return run_id

    def _write_hparams(self, params: Mapping[str, Any]) -> None:
        # Once per run: TensorBoard keeps the first hparams record of a folder, so a later
        # stage could not add to it; the metric columns read the curves' last values.
        from torch.utils.tensorboard.summary import hparams

        values = {
            k: v if isinstance(v, int | float | str | bool) else str(v) for k, v in params.items()
        }
        for record in hparams(values, dict.fromkeys(HPARAM_METRICS, 0.0)):
            self.writer.file_writer.add_summary(record)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)

    def log_image(self, key: str, image: Image.Image, step: int) -> None:
        self.writer.add_image(key, np.asarray(image.convert("RGB")), step, dataformats="HWC")

    def log_summary(self, metrics: Mapping[str, float]) -> None:
        path = self.log_dir / SUMMARY_FILE
        state = json.loads(path.read_text()) if path.is_file() else {"writes": 0, "facts": {}}
        state["facts"].update({k: float(v) for k, v in metrics.items()})
        # The text card keeps one entry per step: each write is the whole summary so far.
        self.writer.add_text(SUMMARY_TAG, summary_markdown(state["facts"]), state["writes"])
        state["writes"] += 1
        tmp = path.with_name(f".{SUMMARY_FILE}.tmp")
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(path)

    def log_embeddings(self, key: str, projection: Projection, step: int) -> None:
        from google.protobuf import text_format
        from PIL import Image
        from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig

        subdir = f"{step:05d}/{key.replace('/', '_')}"
        folder = self.log_dir / subdir
        folder.mkdir(parents=True, exist_ok=True)
        np.savetxt(folder / "tensors.tsv", projection.embeddings, delimiter="\t", fmt="%.7g")
        embedding = ProjectorConfig().embeddings.add()
        embedding.tensor_name = f"{key}:{step:05d}"
        embedding.tensor_path = f"{subdir}/tensors.tsv"
        if projection.columns:
            lines = ["\t".join(projection.columns), *("\t".join(r) for r in projection.rows())]
            (folder / "metadata.tsv").write_text("\n".join(lines) + "\n")
            embedding.metadata_path = f"{subdir}/metadata.tsv"
        if projection.thumbnails is not None:
            Image.fromarray(projection.sprite()).save(folder / "sprite.png")
            embedding.sprite.image_path = f"{subdir}/sprite.png"
            embedding.sprite.single_image_dim.extend(projection.thumbnails.shape[2:0:-1])
        config = ProjectorConfig()
        path = self.log_dir / PROJECTOR_CONFIG
        if path.is_file():
            text_format.Parse(path.read_text(), config)
        kept = [e for e in config.embeddings if e.tensor_name != embedding.tensor_name]
        del config.embeddings[:]
        config.embeddings.extend([*kept, embedding])
        tmp = path.with_name(f".{PROJECTOR_CONFIG}.tmp")
        tmp.write_text(text_format.MessageToString(config))
        tmp.replace(path)

    def finish(self) -> None:
        writer = getattr(self, "writer", None)
        if writer is not None:
            writer.flush()
            writer.close()


def summary_markdown(facts: Mapping[str, float]) -> str:
    """The summary card: one table row per fact, sorted by name.

    >>> print(summary_markdown({"embed/rows": 8000.0, "embed/images_per_s": 5123.4567}))
    | fact | value |
    |---|---|
    | embed/images_per_s | 5123.46 |
    | embed/rows | 8000 |
    """
    rows = [f"| {key} | {value:.6g} |" for key, value in sorted(facts.items())]
    return "\n".join(["| fact | value |", "|---|---|", *rows])


def _unique_dir(parent: Path, name: str) -> str:
    candidate, n = name, 1
    while (parent / candidate).exists():
        n += 1
        candidate = f"{name}-{n}"
    return candidate
