"""Backends in isolation: buffering, failure within the deadline, missing clients, secrets."""

from __future__ import annotations

import socket
import threading
import warnings
from pathlib import Path

import pytest

from embedlab.config import Params
from embedlab.tracking import TRACKERS, backend_class, open_trackers, run_info
from embedlab.tracking.base import RunInfo, TrackerHub, call_with_timeout
from embedlab.tracking.secrets import redact
from embedlab.tracking.spool import pending_records


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens once the socket is closed


def test_every_registered_backend_imports() -> None:
    assert set(TRACKERS) == {"tensorboard", "mlflow", "wandb", "neptune", "dvclive", "csv"}
    for name in TRACKERS:
        assert backend_class(name).name == name


def test_mlflow_buffers_steps_and_flushes_at_finish(workdir: Path) -> None:
    from mlflow.tracking import MlflowClient

    params = Params.model_validate(
        {"tracking": {"loggers": ["mlflow"], "mlflow": {"flush_every": 1000}}}
    )
    hub = open_trackers(params, workdir, stage="train")
    run_id = hub.run_ids["mlflow"]
    for step in range(5):
        hub.log_metrics({"train/loss": 1.0 / (step + 1), "val/OVERALL/cmc@1": 0.5}, step=step)
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    assert client.get_metric_history(run_id, "train/loss") == []  # still buffered
    hub.finish()
    assert hub.failed == {}
    history = client.get_metric_history(run_id, "train/loss")
    assert [(m.step, m.value) for m in history] == [(s, 1.0 / (s + 1)) for s in range(5)]
    assert len(client.get_metric_history(run_id, "val/OVERALL/cmc_at_1")) == 5
    assert client.get_run(run_id).info.status == "FINISHED"


def test_dead_mlflow_server_is_one_warning(workdir: Path) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    params = Params.model_validate(
        {"tracking": {"loggers": ["csv", "mlflow"], "mlflow": {"tracking_uri": url}}}
    )
    with pytest.warns(RuntimeWarning, match=r"tracker 'mlflow' failed during start") as caught:
        hub = open_trackers(params, workdir, stage="train")
    assert len([w for w in caught if "mlflow" in str(w.message)]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning: mlflow is skipped from now on
        hub.log_metrics({"train/loss": 1.0}, step=0)
        hub.finish()
    assert hub.run_ids == {"csv": hub.run_ids["csv"]}
    assert "127.0.0.1" in hub.failed["mlflow"]
    assert "retrying in the background" in str(caught[0].message)
    (journal,) = (workdir / "logs" / "spool" / "mlflow").iterdir()  # kept for `embedlab sync`
    assert journal.name.startswith("local-") and len(pending_records(journal)) == 1


def test_missing_client_is_a_start_failure(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(TRACKERS._entries, "wandb", "embedlab_no_such_module:Tracker")
    params = Params.model_validate({"tracking": {"loggers": ["wandb", "csv"]}})
    with pytest.warns(RuntimeWarning, match=r"tracker 'wandb' failed during start \(Module"):
        hub = open_trackers(params, workdir, stage="train")
    assert list(hub.run_ids) == ["csv"]
    hub.finish()


def test_start_timeout_bounds_a_hanging_client() -> None:
    release, finished = threading.Event(), threading.Event()

    def hanging_client() -> None:
        release.wait(60)
        finished.set()

    with pytest.raises(TimeoutError, match=r"opening did not finish within 0\.2 s"):
        call_with_timeout(hanging_client, 0.2, "opening")
    assert not finished.is_set()  # the stage went on while the client still hung
    release.set()


def test_credentials_are_scrubbed_from_params_and_warnings(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "hunter2-fake-pw")
    uri = "http://alice:hunter2-fake-pw@127.0.0.1:9/"
    params = Params.model_validate({"tracking": {"mlflow": {"tracking_uri": uri}}})
    info = run_info(params, workdir, "train")
    assert info.params["tracking.mlflow.tracking_uri"] == "http://***@127.0.0.1:9/"
    assert "hunter2" not in repr(info)

    class Leaky(backend_class("csv")):
        name = "leaky"

        def start(self, run: RunInfo) -> str:
            raise PermissionError(f"bad credentials hunter2-fake-pw for {uri}")

    with pytest.warns(RuntimeWarning) as caught:
        TrackerHub([Leaky(params, workdir)]).start(info)
    text = str(caught[0].message)
    assert "hunter2" not in text and "alice" not in text and "bad credentials ***" in text
    assert redact("token hunter2-fake-pw") == "token ***"
