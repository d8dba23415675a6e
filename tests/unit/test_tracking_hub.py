from collections.abc import Mapping
from pathlib import Path

import pytest
from PIL import Image

from embedlab.config import Params
from embedlab.tracking import open_trackers, read_run_ids, write_run_ids
from embedlab.tracking.base import RunInfo, Tracker, TrackerError, TrackerHub
from embedlab.tracking.names import metric_names


class Recorder(Tracker):
    name = "recorder"

    def __init__(self, fail_on: str | None = None) -> None:
        super().__init__(Params(), Path("."))
        self.fail_on = fail_on
        self.calls: list[tuple] = []

    def _maybe_fail(self, what: str) -> None:
        if what == self.fail_on:
            raise ConnectionError("server down")

    def start(self, run: RunInfo) -> str:
        self._maybe_fail("start")
        return run.run_id or "new-run"

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self._maybe_fail("log_metrics")
        self.calls.append(("metrics", dict(metrics), step))

    def log_image(self, key: str, image: Image.Image, step: int) -> None:
        self.calls.append(("image", key, step))

    def finish(self) -> None:
        self.calls.append(("finish",))


def test_failing_tracker_is_skipped_with_one_warning() -> None:
    good, bad = Recorder(), Recorder(fail_on="log_metrics")
    bad.name = "flaky"
    hub = TrackerHub([good, bad])
    hub.start(RunInfo(run_name="r", params={}, tags={}))
    with pytest.warns(
        RuntimeWarning,
        match=r"tracker 'flaky' failed during log_metrics \(ConnectionError: server down\)",
    ):
        hub.log_metrics({"train/loss": 1.0}, step=0)
    hub.log_metrics({"train/loss": 0.5}, step=1)  # no second warning, bad no longer called
    assert [c for c in good.calls if c[0] == "metrics"] == [
        ("metrics", {"train/loss": 1.0}, 0),
        ("metrics", {"train/loss": 0.5}, 1),
    ]
    assert hub.failed == {"flaky": "ConnectionError: server down"}
    assert hub.run_ids == {"recorder": "new-run"}


def test_strict_mode_raises() -> None:
    hub = TrackerHub([Recorder(fail_on="start")], strict=True)
    with pytest.raises(TrackerError, match=r"tracking\.strict is true"):
        hub.start(RunInfo(run_name="r", params={}, tags={}))


def test_resume_passes_recorded_ids() -> None:
    tracker = Recorder()
    hub = TrackerHub([tracker])
    assert hub.start(RunInfo(run_name="r", params={}, tags={}), {"recorder": "abc"}) == {
        "recorder": "abc"
    }


def test_metric_names_are_namespaced() -> None:
    names = metric_names(
        {"OVERALL": {"cmc": {1: 0.5, 5: 1.0}, "map": {5: 0.25}}, "shoes": {"cmc": {1: 0.0}}}
    )
    assert names == {
        "val/OVERALL/cmc@1": 0.5,
        "val/OVERALL/cmc@5": 1.0,
        "val/OVERALL/map@5": 0.25,
        "val/shoes/cmc@1": 0.0,
    }


def test_run_ids_round_trip_through_run_json(workdir: Path) -> None:
    params = Params.model_validate({"tracking": {"loggers": ["csv", "tensorboard"]}})
    hub = open_trackers(params, workdir, stage="train")
    hub.log_metrics({"train/loss": 2.0}, step=3)
    hub.finish()
    write_run_ids(workdir, hub)
    ids = read_run_ids(workdir)
    assert set(ids) == {"csv", "tensorboard"}
    again = open_trackers(params, workdir, stage="validate", resume=True)
    assert again.run_ids == ids
    again.log_metrics({"val/OVERALL/cmc@1": 0.9}, step=3)
    again.finish()
    rows = (workdir / "logs" / "csv" / ids["csv"] / "metrics.csv").read_text().splitlines()
    assert rows == ["step,key,value", "3,train/loss,2.0", "3,val/OVERALL/cmc@1,0.9"]
