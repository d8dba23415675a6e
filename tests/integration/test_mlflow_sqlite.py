"""Two experiments at once on MLflow's local sqlite store (``dvc queue start -j 2``).

1. Two processes start on a fresh ``mlflow.db`` at the same moment (both create the
   tables) and log 600 steps each as fast as they can: both runs hold every point.
2. The database is held locked (``BEGIN EXCLUSIVE``) for longer than MLflow's own 20 s
   busy timeout: "database is locked" is retried, no warning, every point arrives.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.integration]

STEPS = 600
KEYS = ("train/loss", "train/pos_dist", "train/lr")


def write_points(root: str, name: str, db: str, steps: str, go: str) -> None:
    """One experiment's process: wait for ``go``, log ``steps`` steps and 6 images, finish."""
    from PIL import Image

    import embedlab.tracking.mlflow as backend
    from embedlab.config import parse_params
    from embedlab.tracking import open_trackers

    os.environ["DVC_EXP_NAME"] = name
    params = parse_params(
        {"tracking": {"loggers": ["mlflow"], "mlflow": {"tracking_uri": f"sqlite:///{db}"}}}
    )
    while not Path(go).exists():
        time.sleep(0.005)
    caught: list[str] = []
    warnings.showwarning = lambda message, *args, **kwargs: caught.append(str(message))
    hub = open_trackers(params, Path(root), stage="train")
    for step in range(int(steps)):
        hub.log_metrics({key: 1.0 / (step + 1) for key in KEYS}, step=step)
        if step % 100 == 0:
            hub.log_image("val/predictions", Image.new("RGB", (8, 8), (step % 255, 0, 0)), step)
    hub.log_summary({"val/OVERALL/cmc@1": 0.5})
    hub.finish()
    result = {
        "run_id": hub.run_ids.get("mlflow"),
        "pending": hub.pending,
        "warnings": caught,
        "lock_retries": backend.lock_retries,
    }
    print("RESULT " + json.dumps(result))


def test_two_experiments_on_one_sqlite_store_both_keep_every_point(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    db = tmp_path / "shared" / "mlflow.db"
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": f"{REPO_ROOT / 'src'}{os.pathsep}{REPO_ROOT}"}
    code = (
        "import sys; from tests.integration.test_mlflow_sqlite import write_points; "
        "write_points(*sys.argv[1:])"
    )
    procs = []
    for name in ("exp-a", "exp-b"):
        root = tmp_path / name
        root.mkdir()
        args = [sys.executable, "-c", code, str(root), name, str(db), str(STEPS), str(go)]
        procs.append(
            subprocess.Popen(args, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, text=True)
        )
    time.sleep(8)  # both have imported everything and wait at the line
    go.touch()
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out
        line = next(line for line in out.splitlines() if line.startswith("RESULT "))
        results.append(json.loads(line.removeprefix("RESULT ")))
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    assert len({r["run_id"] for r in results}) == 2
    for result in results:
        assert result["pending"] == {"mlflow": 0}
        assert not [w for w in result["warnings"] if "tracker '" in w], result["warnings"]
        run = client.get_run(result["run_id"])
        assert run.info.status == "FINISHED"
        for key in KEYS:
            steps = [m.step for m in client.get_metric_history(result["run_id"], key)]
            assert sorted(steps) == list(range(STEPS)), key
        pngs = [a for a in client.list_artifacts(result["run_id"], "images")]
        assert len([a for a in pngs if a.path.endswith(".png")]) == STEPS // 100


def test_a_locked_database_is_waited_out(workdir: Path) -> None:
    from mlflow.tracking import MlflowClient

    import embedlab.tracking.mlflow as backend
    from embedlab.config import Params
    from embedlab.tracking import open_trackers

    db = workdir / "mlflow.db"
    params = Params.model_validate(
        {"tracking": {"loggers": ["mlflow"], "mlflow": {"tracking_uri": f"sqlite:///{db}"}}}
    )
    before = backend.lock_retries
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a tracker warning fails the test
        hub = open_trackers(params, workdir, stage="train")
        run_id = hub.run_ids["mlflow"]
        hub.log_metrics({"train/loss": 1.0}, step=0)
        hub.flush()
        other = sqlite3.connect(db, isolation_level=None)  # another experiment, mid-write
        other.execute("BEGIN EXCLUSIVE")
        for step in range(1, 40):
            hub.log_metrics({"train/loss": 1.0 / (step + 1)}, step=step)
        time.sleep(23)  # longer than MLflow's busy_timeout (20 s): "database is locked"
        other.execute("COMMIT")
        other.close()
        hub.finish()
    assert backend.lock_retries > before
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    assert [m.step for m in client.get_metric_history(run_id, "train/loss")] == list(range(40))
    assert client.get_run(run_id).info.status == "FINISHED"
