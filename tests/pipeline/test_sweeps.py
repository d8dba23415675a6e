"""A queued sweep keeps its tracker data: `dvc exp run --queue` + `dvc queue start -j 2`.

Queued experiments run in temporary copies of the repo that DVC deletes afterwards; their
TensorBoard runs and MLflow runs must land in the repo's own stores, one run per
experiment, named after it, with both processes writing the same sqlite database, and
every step of both (as many ``train/loss`` points as the experiment's ``global_step``,
each once) must be there, not only some.
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

    steps = {name: trained_steps(root, name) for name in ("lr-a", "lr-b")}
    assert all(n > 1 for n in steps.values()), steps

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs = {p.name: p for p in (root / "logs" / "tensorboard").iterdir()}
    for name, n in steps.items():
        (run,) = [path for run_name, path in runs.items() if run_name.startswith(name)]
        events = EventAccumulator(str(run), size_guidance={"scalars": 0}).Reload()
        loss_steps = [event.step for event in events.Scalars("train/loss")]
        assert len(loss_steps) == n and len(set(loss_steps)) == n, (name, loss_steps)
        assert {e.step for e in events.Scalars("val/OVERALL/cmc@1")} == {0, n}, name

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "embedlab"]
    found = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert {"lr-a", "lr-b"} <= set(found), sorted(found)
    for name, n in steps.items():
        run_id = found[name].info.run_id
        # every step of each run reached the shared database, once, with the run's own lr
        loss_steps = [m.step for m in client.get_metric_history(run_id, "train/loss")]
        assert sorted(loss_steps) == sorted(set(loss_steps)) and len(loss_steps) == n, name
        cmc = client.get_metric_history(run_id, "val/OVERALL/cmc_at_1")
        assert {m.step for m in cmc} == {0, n}, name  # untrained, and after the last step
        lr = found[name].data.params["train.optimizer.lr"]
        assert float(lr) == {"lr-a": 0.001, "lr-b": 0.003}[name]


def trained_steps(root: Path, name: str) -> int:
    """``global_step`` of experiment ``name``, from ``reports/train.json`` in its commit."""
    refs = _run(["git", "for-each-ref", "--format=%(objectname) %(refname)", "refs/exps"], root)
    (commit,) = [line.split()[0] for line in refs.stdout.splitlines() if line.endswith(f"/{name}")]
    report = _run(["git", "show", f"{commit}:reports/train.json"], root).stdout
    return int(json.loads(report)["global_step"])
