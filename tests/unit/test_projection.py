"""Embeddings for the trackers' views: the spool keeps them, TensorBoard's projector reads them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from embedlab.config import parse_params
from embedlab.errors import EmbedlabError
from embedlab.tracking.base import RunInfo, Tracker, TrackerHub
from embedlab.tracking.projection import Projection, sample_rows
from embedlab.tracking.spool import Journal
from embedlab.tracking.tensorboard import TensorBoardTracker


def _projection(n: int = 5, dim: int = 3, side: int = 4) -> Projection:
    rng = np.random.default_rng(0)
    return Projection(
        rng.normal(size=(n, dim)).astype(np.float32),
        {"label": [str(i % 2) for i in range(n)], "path": [f"a\tb{i}.png" for i in range(n)]},
        rng.integers(0, 255, (n, side, side, 3), dtype=np.uint8),
    )


def test_a_spooled_projection_replays_exactly(tmp_path: Path) -> None:
    projection = _projection()
    journal = Journal.open(tmp_path / "spool", "tensorboard", float("inf"), {"run_id": "r"})
    journal.append("embeddings", {"key": "val/embeddings", "step": 3}, attachment=projection)
    journal.close()
    again = Journal.open(tmp_path / "spool", "tensorboard", float("inf"), {"run_id": "r"})
    (record,) = again.pending()
    replayed = again.attachment(record)  # from the npz file, not from memory
    assert record.attachment is None
    np.testing.assert_array_equal(replayed.embeddings, projection.embeddings)
    np.testing.assert_array_equal(replayed.thumbnails, projection.thumbnails)
    assert replayed.metadata == projection.metadata
    again.ack(record.seq)
    assert not list((tmp_path / "spool" / "embeddings").iterdir())  # gone once acknowledged
    again.close()


class _Recorder(Tracker):
    name = "recorder"

    def __init__(self, takes: bool) -> None:
        self.takes_embeddings = takes
        self.run_id = None
        self.got: list[tuple[str, int, int]] = []

    def start(self, run: RunInfo) -> str:
        self.run_id = "r"
        return "r"

    def log_metrics(self, metrics, step) -> None:  # type: ignore[no-untyped-def]
        pass

    def log_image(self, key, image, step) -> None:  # type: ignore[no-untyped-def]
        pass

    def log_embeddings(self, key: str, projection: Projection, step: int) -> None:
        self.got.append((key, len(projection), step))

    def finish(self) -> None:
        pass


def test_the_hub_sends_embeddings_only_to_backends_that_show_them() -> None:
    takes, ignores = _Recorder(True), _Recorder(False)
    ignores.name = "other"
    hub = TrackerHub([takes, ignores], strict=True)
    hub.start(RunInfo("run", {}, {}))
    assert hub.takes_embeddings
    hub.log_embeddings("val/embeddings", _projection(), step=7)
    hub.finish()
    assert takes.got == [("val/embeddings", 5, 7)]
    assert ignores.got == []
    assert not TrackerHub([ignores]).takes_embeddings


def test_tensorboard_projector_files_and_a_merged_config(tmp_path: Path) -> None:
    from google.protobuf import text_format
    from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig

    tracker = TensorBoardTracker(parse_params({}), tmp_path)
    run_id = tracker.start(RunInfo("run", {"a": 1}, {}))
    projection = _projection(n=5, side=4)
    tracker.log_embeddings("val/embeddings", projection, step=0)
    tracker.log_embeddings("val/embeddings", projection, step=12)
    tracker.log_embeddings("val/embeddings", projection, step=12)  # a rerun replaces its entry
    tracker.finish()

    run_dir = tmp_path / "logs" / "tensorboard" / run_id
    config = text_format.Parse((run_dir / "projector_config.pbtxt").read_text(), ProjectorConfig())
    assert [e.tensor_name for e in config.embeddings] == [
        "val/embeddings:00000",
        "val/embeddings:00012",
    ]
    entry = config.embeddings[1]
    vectors = np.loadtxt(run_dir / entry.tensor_path, delimiter="\t")
    np.testing.assert_allclose(vectors, projection.embeddings, rtol=1e-6)
    lines = (run_dir / entry.metadata_path).read_text().splitlines()
    assert lines[0] == "label\tpath" and lines[1] == "0\ta b0.png"  # the tab became a space
    assert len(lines) == 6
    sprite = np.asarray(Image.open(run_dir / entry.sprite.image_path))
    assert sprite.shape == (12, 12, 3)  # 3 x 3 cells of 4 px for 5 thumbnails
    np.testing.assert_array_equal(sprite[4:8, 0:4], projection.thumbnails[3])
    assert list(entry.sprite.single_image_dim) == [4, 4]


def test_sample_is_seeded_and_bounded() -> None:
    rows = sample_rows(10_000, 100, seed=3)
    assert len(rows) == 100 and len(set(rows.tolist())) == 100
    assert rows.tolist() == sorted(rows.tolist())
    assert rows.tolist() == sample_rows(10_000, 100, seed=3).tolist()
    assert rows.tolist() != sample_rows(10_000, 100, seed=4).tolist()


def test_a_sprite_too_wide_for_tensorboard_is_refused_by_name() -> None:
    with pytest.raises(EmbedlabError, match=r"validate\.projector.*8192"):
        parse_params({"validate": {"projector": {"max_items": 100_000, "thumbnail_size": 64}}})


def test_projection_of_validation_items_keeps_their_ids_and_class_names(tmp_path: Path) -> None:
    import pandas as pd

    from embedlab.config import ProjectorParams
    from embedlab.data.datasets import DatasetQueryGallery
    from embedlab.stages.validation import build_projection

    for i in range(6):
        Image.new("L", (6, 3), 40 * i).save(tmp_path / f"{i}.png")
    df = pd.DataFrame(
        {
            "label": [0, 0, 1, 1, 2, 2],
            "path": [f"{i}.png" for i in range(6)],
            "row_id": [100 + i for i in range(6)],
            "class_name": ["boot", "boot", "bag", "bag", "shirt", "shirt"],
        }
    )
    embeddings = np.arange(12, dtype=np.float32).reshape(6, 2)
    cfg = ProjectorParams(max_items=4, thumbnail_size=6, seed=1)
    projection = build_projection(embeddings, DatasetQueryGallery(df, tmp_path), cfg, seed=0)
    rows = sample_rows(6, 4, seed=1)  # the projector's own seed wins over the run's
    assert projection.metadata["row_id"] == [str(100 + i) for i in rows]
    assert projection.metadata["class_name"] == [df["class_name"][i] for i in rows]
    np.testing.assert_array_equal(projection.embeddings, embeddings[rows])
    # a 6x3 image letterboxed into 6x6: its pixels in the middle rows, black bars around
    thumb = projection.thumbnails[0]
    assert thumb.shape == (6, 6, 3)
    assert (thumb[0] == 0).all() and (thumb[2:4] == 40 * rows[0]).all()
