"""A queued sweep keeps its tracker data: `dvc exp run --queue` + `dvc queue start -j 2`.

Queued experiments run in temporary copies of the repo that DVC deletes afterwards; their
TensorBoard runs and MLflow runs must land in the repo's own stores, one run per
experiment, named after it, with both processes writing the same sqlite database.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.pipeline.test_pipeline import _run, copy_repo

pytestmark = pytest.mark.slow


def test_a_queued_sweep_writes_every_experiment_into_the_repos_stores(tmp_path: Path) -> None:
    root = copy_repo(
        tmp_path,
        {"train": {"max_epochs": 1}, "tracking": {"loggers": ["tensorboard", "mlflow"]}},
    )
    _run(["dvc", "exp", "run", "--queue", "-S", "train.optimizer.lr=0.001", "-n", "lr-a"], root)
    _run(["dvc", "exp", "run", "--queue", "-S", "train.optimizer.lr=0.003", "-n", "lr-b"], root)
    _run(["dvc", "queue", "start", "-j", "2"], root)
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        status = _run(["dvc", "queue", "status"], root).stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(5)
    assert "Success" in status and "Failed" not in status, status
    shown = json.dumps(json.loads(_run(["dvc", "exp", "show", "--json"], root).stdout))
    assert "lr-a" in shown and "lr-b" in shown

    runs = sorted(p.name for p in (root / "logs" / "tensorboard").iterdir())
    assert any(name.startswith("lr-a") for name in runs), runs
    assert any(name.startswith("lr-b") for name in runs), runs

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "embedlab"]
    found = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert {"lr-a", "lr-b"} <= set(found), sorted(found)
    for name in ("lr-a", "lr-b"):
        history = client.get_metric_history(found[name].info.run_id, "train/loss")
        assert history, name  # every step of the run reached the shared store
        assert client.get_metric_history(found[name].info.run_id, "val/OVERALL/cmc_at_1")
