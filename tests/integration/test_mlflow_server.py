"""The MLflow backend against a real ``mlflow server`` on 127.0.0.1 (own sqlite + artifacts).

1. train + validate log one run; it is read back over the server's REST API.
2. the server is killed during training: one warning naming mlflow within 30 s, and both
   stages still complete with their local outputs.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from embedlab.stages.prepare import run_prepare
from embedlab.stages.train import run_train
from embedlab.stages.validate import run_validate
from embedlab.tracking import read_run_ids
from embedlab.tracking.mlflow import mlflow_name
from embedlab.tracking.names import metric_names
from tests.conftest import fast_params

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        mlflow = Path(sys.executable).with_name("mlflow")
        self.log = open(folder / "server.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                str(mlflow), "server", "--host", "127.0.0.1", "--port", str(self.port),
                "--backend-store-uri", f"sqlite:///{folder / 'server.db'}",
                "--artifacts-destination", str(folder / "artifacts"),
                "--workers", "1",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {(folder / 'server.log').read_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError("mlflow server did not come up within 120 s")

    def get(self, endpoint: str, **query: str) -> Any:
        url = f"{self.url}/api/2.0/mlflow/{endpoint}?{urllib.parse.urlencode(query)}"
        with urllib.request.urlopen(url, timeout=10) as reply:
            return json.loads(reply.read())

    def stop(self) -> None:
        import os
        import signal

        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the whole server group: gunicorn/uvicorn
            self.proc.wait(timeout=30)
        self.log.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path)
    try:
        yield srv
    finally:
        srv.stop()


def _params(url: str) -> Any:
    return fast_params(
        tracking__loggers=["mlflow", "csv"],
        tracking__mlflow={"tracking_uri": url, "request_timeout": 5, "max_retries": 1},
    )


def test_train_and_validate_log_one_run_on_a_server(server: Server, workdir: Path) -> None:
    params = _params(server.url)
    run_prepare(params, workdir)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # any tracker failure fails the test
        report = run_train(params, workdir)
        metrics = run_validate(params, workdir)
    run_id = read_run_ids(workdir)["mlflow"]
    run = server.get("runs/get", run_id=run_id)["run"]
    assert run["info"]["status"] == "FINISHED"
    params_logged = {p["key"]: p["value"] for p in run["data"]["params"]}
    assert params_logged["train.optimizer.lr"] == "0.001"
    assert params_logged["tracking.mlflow.tracking_uri"] == server.url
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    assert tags["params_hash"] == params.short_hash()
    history = server.get("metrics/get-history", run_id=run_id, metric_key="train/loss")
    assert [m["step"] for m in history["metrics"]] == list(range(report["global_step"]))
    final = metric_names(metrics)["val/OVERALL/cmc@1"]
    latest = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    assert latest[mlflow_name("val/OVERALL/cmc@1")] == pytest.approx(final)
    files = server.get("artifacts/list", run_id=run_id, path="extractor")["files"]
    assert {f["path"] for f in files} == {
        "extractor/extractor.safetensors",
        "extractor/extractor.json",
    }
    images = server.get("artifacts/list", run_id=run_id, path="images")["files"]
    assert sum(f["path"].endswith(".png") for f in images) == 6  # 2 grids x 3 validations


def test_server_killed_mid_run_warns_and_stages_complete(server: Server, workdir: Path) -> None:
    params = _params(server.url)
    run_prepare(params, workdir)
    events: list[tuple[float, str]] = []
    killed: list[float] = []

    def kill_when_the_run_exists() -> None:
        deadline = time.monotonic() + 120
        while not (workdir / "reports" / "run.json").is_file() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(2.0)  # a few training steps in
        killed.append(time.monotonic())
        server.stop()

    def record(message: Any, *args: Any, **kwargs: Any) -> None:
        events.append((time.monotonic(), str(message)))

    killer = threading.Thread(target=kill_when_the_run_exists, daemon=True)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record
        killer.start()
        train_started = time.monotonic()
        report = run_train(params, workdir)
        train_s = time.monotonic() - train_started
        killer.join(timeout=10)
        metrics = run_validate(params, workdir)
    assert killed, "the server was never stopped"
    failures = [(t, m) for t, m in events if "tracker 'mlflow' failed" in m]
    assert failures, f"no warning about mlflow; got {[m for _, m in events]}"
    assert failures[0][0] - killed[0] < 30.0
    assert "skipping it for the rest of this stage" in failures[0][1]
    assert len([m for _, m in failures if "during start" not in m]) == 1  # once in train
    assert any("during start" in m for _, m in failures)  # validate: the server is gone
    assert train_s < 180
    # everything local is there, and the other tracker kept logging
    for out in ("models/extractor.safetensors", "reports/train.json", "reports/metrics.json"):
        assert (workdir / out).is_file(), out
    assert report["global_step"] > 0 and metrics["OVERALL"]["n_queries"] > 0
    run_json = json.loads((workdir / "reports" / "run.json").read_text())
    assert "mlflow" in run_json["failed"]
    assert "mlflow" in run_json["run_ids"]  # kept: the next stage resumes, not a second run
    csv_rows = next((workdir / "logs" / "csv").glob("*/metrics.csv")).read_text()
    assert "val/OVERALL/cmc@1" in csv_rows
