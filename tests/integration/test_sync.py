"""``embedlab sync``: a run whose server was down from the start reaches the tracker later.

The MLflow server is down when the stage opens its run, so everything is spooled under a
local name; ``embedlab sync --status`` lists it, ``embedlab sync`` against a store that
answers creates the run from the spooled run info and sends every record once.
"""

from __future__ import annotations

import contextlib
import io
import socket
import warnings
from pathlib import Path

import pytest
import yaml
from PIL import Image

from embedlab.cli import main
from embedlab.config import Params
from embedlab.tracking import open_trackers

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _sync(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["sync", *args])
    return code, out.getvalue()


def _params_yaml(root: Path, uri: str) -> dict:
    raw = {
        "tracking": {
            "loggers": ["mlflow"],
            "mlflow": {"tracking_uri": uri},
            "spool": {"finish_timeout": 0.5},
        }
    }
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    return raw


def test_sync_sends_what_a_dead_server_missed_into_a_new_run(workdir: Path) -> None:
    from mlflow.tracking import MlflowClient

    dead = f"http://127.0.0.1:{_closed_port()}"
    params = Params.model_validate(_params_yaml(workdir, dead))
    code, out = _sync()
    assert (code, out) == (0, "nothing to sync: no unsent tracker records in logs/spool/\n")
    with pytest.warns(RuntimeWarning, match=r"tracker 'mlflow' failed during start .*retrying"):
        hub = open_trackers(params, workdir, stage="train")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning per call
        for step in range(10):
            hub.log_metrics({"train/loss": 1.0 / (step + 1), "val/OVERALL/cmc@1": 0.5}, step)
        hub.log_image("val/predictions", Image.new("RGB", (6, 6), (0, 90, 0)), step=10)
        hub.log_summary({"val/OVERALL/n_queries": 40.0})
        hub.finish()
    assert hub.pending == {"mlflow": 12} and hub.run_ids == {}

    code, out = _sync("--status")
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["backend", "run", "pending", "kinds"]
    assert lines[1].startswith("mlflow       (not created yet: local-")
    assert lines[1].rstrip().endswith("12  image 1, metrics 10, summary 1")

    code, out = _sync()  # still down: nothing lost, exit 1
    assert code == 1 and "12 still pending" in out

    store = f"sqlite:///{workdir / 'mlflow.db'}"
    _params_yaml(workdir, store)  # the server is back (here: a store that answers)
    code, out = _sync()
    assert code == 0, out
    assert out.startswith("mlflow run ") and out.rstrip().endswith("sent 12 records")
    run_id = out.split()[2].rstrip(":")
    client = MlflowClient(tracking_uri=store)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["tracking.mlflow.tracking_uri"] == dead  # the stage's params
    assert run.data.tags["params_hash"] == params.short_hash()
    assert [m.step for m in client.get_metric_history(run_id, "train/loss")] == list(range(10))
    assert len(client.get_metric_history(run_id, "val/OVERALL/cmc_at_1")) == 10
    assert [
        (m.step, m.value) for m in client.get_metric_history(run_id, "val/OVERALL/n_queries")
    ] == [(0, 40.0)]
    assert "images" in {a.path for a in client.list_artifacts(run_id)}

    assert _sync() == (0, "nothing to sync: no unsent tracker records in logs/spool/\n")
    assert [m.step for m in client.get_metric_history(run_id, "train/loss")] == list(range(10))
