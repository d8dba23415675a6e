"""Two-process CPU DDP (gloo), launched the way users launch it: ``python pipeline/<stage>.py``
with ``train.trainer: {devices: 2, strategy: ddp}``. Distributed validation must give exactly
the single-process metrics on the same weights, and distributed embed the same file."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from embedlab.config import Params
from embedlab.embedding.store import EMBEDDINGS_FILE, ITEMS_FILE
from embedlab.io import read_json
from embedlab.stages.common import EMBEDDINGS_DIR, TRAIN_REPORT
from embedlab.stages.embed import run_embed
from embedlab.stages.prepare import run_prepare
from embedlab.stages.validate import run_validate
from embedlab.tracking import RUN_FILE
from embedlab.tracking.names import metric_names
from tests.conftest import REPO_ROOT, fast_params

pytestmark = [pytest.mark.slow, pytest.mark.integration]

EPOCHS = 2
SAMPLER = {"n_labels": 5, "n_instances": 16}


def ddp_params() -> Params:
    return fast_params(
        train__max_epochs=EPOCHS,
        train__sampler=SAMPLER,
        train__trainer={"accelerator": "cpu", "devices": 2, "strategy": "ddp"},
        validate__batch_size=100,  # 896 validation rows: 9 batches, rank 1 gets a repeat
        embed__batch_size=100,
    )


def one_process(params: Params) -> Params:
    raw = params.model_dump(mode="json")
    raw["train"]["trainer"] = {"accelerator": "cpu", "devices": 1, "strategy": "auto"}
    return Params.model_validate(raw)


def run_stage(root: Path, stage: str) -> str:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(
        [sys.executable, f"pipeline/{stage}.py"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def ddp_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repo copy where train (2 processes) has run."""
    root = tmp_path_factory.mktemp("ddp")
    shutil.copytree(REPO_ROOT / "pipeline", root / "pipeline")
    params = ddp_params()
    (root / "params.yaml").write_text(yaml.safe_dump(params.model_dump(mode="json")))
    run_prepare(params, root)
    run_stage(root, "train")
    return root


def test_ddp_training_shards_batches_and_rank_zero_alone_reports(ddp_repo: Path) -> None:
    report = read_json(ddp_repo / TRAIN_REPORT)
    n_train = int((pd.read_csv(ddp_repo / "data/prepared/manifest.csv")["split"] == "train").sum())
    batches = n_train // (SAMPLER["n_labels"] * SAMPLER["n_instances"])
    # each rank takes its share of one epoch's balanced batches; steps count per rank
    assert report["global_step"] == EPOCHS * (batches // 2)
    assert report["epochs"] == EPOCHS
    run_ids = read_json(ddp_repo / RUN_FILE)["run_ids"]
    assert [p.name for p in (ddp_repo / "logs" / "csv").iterdir()] == [run_ids["csv"]]


def test_ddp_validation_equals_one_process_on_the_same_weights(
    ddp_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ddp_repo)
    single = metric_names(run_validate(one_process(ddp_params()), ddp_repo))
    final = read_json(ddp_repo / "reports" / "plots" / "validation.json")[-1]
    gathered = {f"val/OVERALL/{k}": v for k, v in final.items() if k != "epoch"}
    manifest = pd.read_csv(ddp_repo / "data/prepared/manifest.csv")
    queries = int(manifest.loc[manifest["split"] == "validation", "is_query"].astype(bool).sum())
    assert gathered["val/OVERALL/n_queries"] == queries  # every query once: padding dropped
    assert gathered == {k: v for k, v in single.items() if k.startswith("val/OVERALL/")}


def test_ddp_embed_writes_the_one_process_file(
    ddp_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_stage(ddp_repo, "embed")
    out = ddp_repo / EMBEDDINGS_DIR
    distributed = np.load(out / EMBEDDINGS_FILE)
    items = pd.read_parquet(out / ITEMS_FILE)
    monkeypatch.chdir(ddp_repo)
    run_embed(one_process(ddp_params()), ddp_repo)
    single = np.load(out / EMBEDDINGS_FILE)
    assert distributed.shape == single.shape == (len(items), 32)
    assert np.array_equal(distributed, single)
    pd.testing.assert_frame_equal(items, pd.read_parquet(out / ITEMS_FILE))
