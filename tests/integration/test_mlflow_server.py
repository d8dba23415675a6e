"""The MLflow backend against a real ``mlflow server`` on 127.0.0.1 (own sqlite + artifacts).

1. train + validate log one run; it is read back over the server's REST API.
2. the server is killed after the first epoch and restarted on the same port OUTAGE_S
   later: one warning naming mlflow within 30 s, both stages complete, and once they (and
   ``embedlab sync``) are done the run holds every step once and every validation.
"""

from __future__ import annotations

import contextlib
import io
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

from embedlab.cli import main as cli_main
from embedlab.stages.prepare import run_prepare
from embedlab.stages.train import run_train
from embedlab.stages.validate import run_validate
from embedlab.tracking import read_run_ids
from embedlab.tracking.mlflow import mlflow_name
from embedlab.tracking.names import curves_and_facts, metric_names
from embedlab.tracking.spool import spool_entries
from tests.conftest import fast_params

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``mlflow server`` in its own process group; ``stop`` kills it, ``start`` brings it
    back on the same port with the same database and artifacts."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        mlflow = Path(sys.executable).with_name("mlflow")
        folder = self.folder
        log = open(folder / "server.log", "ab")  # noqa: SIM115 - handed to the process
        self.proc = subprocess.Popen(
            [
                str(mlflow), "server", "--host", "127.0.0.1", "--port", str(self.port),
                "--backend-store-uri", f"sqlite:///{folder / 'server.db'}",
                "--artifacts-destination", str(folder / "artifacts"),
                "--workers", "1",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {(folder / 'server.log').read_text()}")
            if self.healthy():
                return
            time.sleep(0.5)
        self.stop()
        raise RuntimeError("mlflow server did not come up within 120 s")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as reply:
                return reply.status == 200
        except OSError:
            return False

    def get(self, endpoint: str, **query: str) -> Any:
        url = f"{self.url}/api/2.0/mlflow/{endpoint}?{urllib.parse.urlencode(query)}"
        with urllib.request.urlopen(url, timeout=10) as reply:
            return json.loads(reply.read())

    def stop(self) -> None:
        import os
        import signal

        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the whole server group: gunicorn/uvicorn
            self.proc.wait(timeout=30)


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


OUTAGE_S = 25.0
"""How long the server stays down (the process is really gone)."""


def test_server_down_after_the_first_epoch_loses_nothing(server: Server, workdir: Path) -> None:
    params = fast_params(
        train__max_epochs=4,
        train__val_every_n_epochs=1,
        tracking__loggers=["mlflow", "csv"],
        tracking__mlflow={"tracking_uri": server.url, "request_timeout": 5, "max_retries": 1},
    )
    run_prepare(params, workdir)
    events: list[tuple[float, str]] = []
    outage: dict[str, float] = {}

    def outage_after_the_first_epoch() -> None:
        checkpoint = workdir / "models" / "checkpoints" / "last.ckpt"  # written each epoch
        deadline = time.monotonic() + 300
        while not checkpoint.is_file() and time.monotonic() < deadline:
            time.sleep(0.05)
        outage["down"] = time.monotonic()
        server.stop()
        assert not server.healthy()
        time.sleep(OUTAGE_S)
        server.start()
        outage["up"] = time.monotonic()

    def record(message: Any, *args: Any, **kwargs: Any) -> None:
        events.append((time.monotonic(), str(message)))

    killer = threading.Thread(target=outage_after_the_first_epoch, daemon=True)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record
        killer.start()
        started = time.monotonic()
        report = run_train(params, workdir)
        outage["train_end"] = time.monotonic()
        killer.join(timeout=OUTAGE_S + 150)
        assert "up" in outage, "the server was not restarted"
        metrics = run_validate(params, workdir)
    out = io.StringIO()
    # sync reads the stores from params.yaml (the stages above got the params in-process)
    (workdir / "params.yaml").write_text(json.dumps(params.model_dump(mode="json")))
    with contextlib.redirect_stdout(out):
        assert cli_main(["sync"]) == 0, out.getvalue()

    timeline = {k: round(v - started, 1) for k, v in outage.items()}
    print(f"outage timeline (s after train began): {timeline}")  # shown when a check fails
    failures = [(t, m) for t, m in events if "tracker 'mlflow' failed" in m]
    assert len(failures) == 1, [m for _, m in events]  # once, not once per call
    assert outage["down"] < failures[0][0] < outage["up"]  # told while the server is down
    assert "retrying in the background" in failures[0][1]
    run_id = read_run_ids(workdir)["mlflow"]
    run = server.get("runs/get", run_id=run_id)["run"]
    assert run["info"]["status"] == "FINISHED"
    steps = report["global_step"]
    history = server.get("metrics/get-history", run_id=run_id, metric_key="train/loss")
    assert sorted(m["step"] for m in history["metrics"]) == list(range(steps))  # each once
    # every validation the local CSV log saw (before training, each epoch, the validate stage)
    csv_rows = next((workdir / "logs" / "csv").glob("*/metrics.csv")).read_text().splitlines()
    validations = sorted(int(r.split(",")[0]) for r in csv_rows if ",val/OVERALL/cmc@1," in r)
    assert len(validations) == report["epochs"] + 2
    curves, facts = curves_and_facts(metrics)
    for name in curves:
        key = mlflow_name(name)
        logged = server.get("metrics/get-history", run_id=run_id, metric_key=key)["metrics"]
        assert sorted(m["step"] for m in logged) == validations, name
    for name, value in facts.items():  # the run's facts: one value each, exactly once
        key = mlflow_name(name)
        logged = server.get("metrics/get-history", run_id=run_id, metric_key=key)["metrics"]
        assert [(m["step"], m["value"]) for m in logged] == [(0, value)], name
    final = metric_names(metrics)["val/OVERALL/cmc@1"]
    latest = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    assert latest[mlflow_name("val/OVERALL/cmc@1")] == pytest.approx(final)
    images = [
        f["path"] for f in server.get("artifacts/list", run_id=run_id, path="images")["files"]
    ]
    for key in ("val~predictions", "val~worst_queries"):
        pictures = [p for p in images if key in p and p.endswith(".png")]
        assert sorted(int(p.split("+step+")[1].split("+")[0]) for p in pictures) == validations
    files = server.get("artifacts/list", run_id=run_id, path="extractor")["files"]
    assert {f["path"] for f in files} == {
        "extractor/extractor.safetensors",
        "extractor/extractor.json",
    }
    assert not any(e.pending for e in spool_entries(workdir))  # nothing left behind
