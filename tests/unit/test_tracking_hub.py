import threading
import time
import warnings
from collections.abc import Mapping
from pathlib import Path

import pytest
from PIL import Image

from embedlab.config import Params
from embedlab.tracking import open_trackers, read_run_ids, write_run_ids
from embedlab.tracking.base import RunInfo, Tracker, TrackerError, TrackerHub
from embedlab.tracking.channel import SpoolSettings
from embedlab.tracking.names import metric_names
from embedlab.tracking.spool import pending_records


class Recorder(Tracker):
    """Records what it receives; ``down`` sends fail (like a dead server) until cleared."""

    name = "recorder"

    def __init__(self, fail_on: str | None = None, down: int = 0) -> None:
        super().__init__(Params(), Path("."))
        self.fail_on = fail_on
        self.down = down
        """Number of sends that fail before the backend answers again (-1: never)."""
        self.calls: list[tuple] = []
        self.lock = threading.Lock()

    def _maybe_fail(self, what: str) -> None:
        if what == self.fail_on and self.down != 0:
            self.down -= 1
            raise ConnectionError("server down")

    def start(self, run: RunInfo) -> str:
        self._maybe_fail("start")
        return run.run_id or "new-run"

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self._maybe_fail("log_metrics")
        with self.lock:
            self.calls.append(("metrics", dict(metrics), step))

    def log_image(self, key: str, image: Image.Image, step: int) -> None:
        self.calls.append(("image", key, step, image.size))

    def log_summary(self, metrics: Mapping[str, float]) -> None:
        if "bad" in metrics:
            raise ValueError("bad value")
        self.calls.append(("summary", dict(metrics)))

    def finish(self) -> None:
        self.calls.append(("finish",))

    def steps(self) -> list[int]:
        return [c[2] for c in self.calls if c[0] == "metrics"]


FAST = SpoolSettings(finish_timeout=2.0, first_backoff=0.01, max_backoff=0.05)


def test_failing_tracker_is_retried_until_it_has_every_point_once() -> None:
    good, flaky = Recorder(), Recorder(fail_on="log_metrics", down=5)
    flaky.name = "flaky"
    hub = TrackerHub([good, flaky], settings=FAST)
    hub.start(RunInfo(run_name="r", params={}, tags={}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(20):
            hub.log_metrics({"train/loss": 1.0 / (step + 1)}, step=step)
        hub.finish()
    messages = [str(w.message) for w in caught if "tracker '" in str(w.message)]
    assert len(messages) == 1, messages  # one outage, one warning
    assert messages[0].startswith(
        "tracker 'flaky' failed during log_metrics (ConnectionError: server down); retrying"
    )
    assert good.steps() == list(range(20))
    assert flaky.steps() == list(range(20))  # every point, in order, none twice
    assert flaky.calls[-1] == ("finish",)
    assert hub.failed == {} and hub.pending == {"recorder": 0, "flaky": 0}
    assert hub.run_ids == {"recorder": "new-run", "flaky": "new-run"}


def test_dead_tracker_costs_one_warning_and_a_bounded_finish(tmp_path: Path) -> None:
    dead = Recorder(fail_on="log_metrics", down=-1)
    hub = TrackerHub([dead], spool_dir=tmp_path, settings=FAST)
    hub.start(RunInfo(run_name="r", params={}, tags={}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(50):
            hub.log_metrics({"train/loss": 1.0}, step=step)
        hub.finish()
    tries = dead.down  # counts down by one per failed send
    time.sleep(10 * FAST.max_backoff)  # several retry intervals
    assert dead.down == tries  # finish left it: nothing retries any more
    assert len([w for w in caught if "tracker 'recorder'" in str(w.message)]) == 1
    assert hub.pending == {"recorder": 50} and "recorder" in hub.failed
    assert ("finish",) not in dead.calls
    assert len(pending_records(tmp_path / "recorder" / "new-run")) == 50


def test_next_stage_replays_what_is_pending_first_and_once(tmp_path: Path) -> None:
    dead = Recorder(fail_on="log_metrics", down=-1)
    first = TrackerHub([dead], spool_dir=tmp_path, settings=FAST)
    first.start(RunInfo(run_name="r", params={}, tags={}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for step in range(10):
            first.log_metrics({"train/loss": float(step)}, step=step)
        first.finish()
    back = Recorder()
    second = TrackerHub([back], spool_dir=tmp_path, settings=FAST)
    second.start(
        RunInfo(run_name="r", params={}, tags={}, stage="validate"), {"recorder": "new-run"}
    )
    second.log_metrics({"val/OVERALL/cmc@1": 0.5}, step=10)
    second.finish()
    assert back.steps() == list(range(11))
    assert back.calls[0] == ("metrics", {"train/loss": 0.0}, 0)
    third = TrackerHub([Recorder()], spool_dir=tmp_path, settings=FAST)
    third.start(RunInfo(run_name="r", params={}, tags={}), {"recorder": "new-run"})
    third.finish()
    assert third.trackers[0].calls == [("finish",)]  # nothing sent twice


def test_a_hung_backend_is_left_after_finish_timeout(tmp_path: Path) -> None:
    release = threading.Event()

    class Hung(Recorder):
        def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
            release.wait(60)
            super().log_metrics(metrics, step)

    hung = Hung()
    hub = TrackerHub([hung], spool_dir=tmp_path, settings=SpoolSettings(finish_timeout=0.3))
    hub.start(RunInfo(run_name="r", params={}, tags={}))
    for step in range(3):
        hub.log_metrics({"train/loss": 1.0}, step=step)
    hub.finish()  # returns while the send still hangs (waiting it out would take 60 s)
    assert not release.is_set() and hung.steps() == []
    assert hub.pending == {"recorder": 3}
    # the stuck send completes later: it is acknowledged, so a replay does not repeat it
    release.set()
    deadline = time.monotonic() + 5
    while not hung.steps() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    after = Recorder()
    hub2 = TrackerHub([after], spool_dir=tmp_path, settings=FAST)
    hub2.start(RunInfo(run_name="r", params={}, tags={}), {"recorder": "new-run"})
    hub2.finish()
    assert hung.steps() + after.steps() == [0, 1, 2]  # each once, by one or the other


def test_a_refused_record_is_set_aside_and_the_rest_delivered(tmp_path: Path) -> None:
    tracker = Recorder()
    hub = TrackerHub([tracker], spool_dir=tmp_path, settings=FAST)
    hub.start(RunInfo(run_name="r", params={}, tags={}))
    with pytest.warns(RuntimeWarning, match=r"refused a summary record \(ValueError: bad value\)"):
        hub.log_summary({"bad": 1.0})
        hub.log_image("val/predictions", Image.new("RGB", (4, 3)), step=1)
        hub.log_metrics({"train/loss": 1.0}, step=2)
        hub.finish()
    assert [c[0] for c in tracker.calls] == ["image", "metrics", "finish"]
    assert tracker.calls[0] == ("image", "val/predictions", 1, (4, 3))
    rejected = (tmp_path / "recorder" / "new-run" / "rejected.jsonl").read_text()
    assert '"cause": "ValueError: bad value"' in rejected


def test_strict_mode_raises() -> None:
    hub = TrackerHub([Recorder(fail_on="start", down=-1)], strict=True)
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
