"""Killed mid-training, the rerun resumes from the last checkpoint and ends where an
uninterrupted run ends; checkpoints that are stale or hold pickled objects are not resumed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from embedlab.config import Params
from embedlab.errors import EmbedlabError
from embedlab.io import read_json, write_json
from embedlab.lightning.checkpoint import (
    LAST_CHECKPOINT,
    RESUME_FILE,
    AtomicCheckpointIO,
    resume_key,
)
from embedlab.stages.common import CHECKPOINTS_DIR, MANIFEST, METRICS_REPORT, TRAIN_REPORT
from embedlab.stages.prepare import run_prepare
from embedlab.stages.train import run_train
from embedlab.stages.validate import run_validate
from embedlab.tracking import RUN_FILE
from tests.conftest import REPO_ROOT, fast_params

pytestmark = [pytest.mark.slow, pytest.mark.integration]

EPOCHS = 4


def resume_params(**overrides: Any) -> Params:
    """Fast params with several short epochs (11 steps each) and validation every 2."""
    return fast_params(
        train__max_epochs=EPOCHS,
        train__val_every_n_epochs=2,
        train__sampler={"n_labels": 5, "n_instances": 16},
        **overrides,
    )


def make_repo(root: Path, params: Params, prepared: Path) -> Path:
    """A repo copy the stage scripts run in: pipeline/, params.yaml and the prepared data."""
    root.mkdir(parents=True)
    shutil.copytree(REPO_ROOT / "pipeline", root / "pipeline")
    shutil.copytree(prepared / "data", root / "data")
    (root / "params.yaml").write_text(yaml.safe_dump(params.model_dump(mode="json")))
    return root


def train_process(root: Path) -> subprocess.Popen:
    """``python pipeline/train.py`` in ``root``, its output going to ``root/train.log``."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(root / "train.log", "a") as log:
        return subprocess.Popen(
            [sys.executable, "pipeline/train.py"], cwd=root, env=env, stdout=log, stderr=log
        )


def finish(process: subprocess.Popen, root: Path, timeout: float = 600) -> str:
    process.wait(timeout=timeout)
    out = (root / "train.log").read_text()
    assert process.returncode == 0, out[-3000:]
    return out


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("prepared")
    run_prepare(resume_params(), root)
    return root


def test_killed_training_resumes_to_the_same_result(
    prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = resume_params()
    whole = make_repo(tmp_path / "whole", params, prepared)
    broken = make_repo(tmp_path / "broken", params, prepared)

    victim = train_process(broken)
    checkpoint = broken / CHECKPOINTS_DIR / LAST_CHECKPOINT
    deadline = time.monotonic() + 600
    while not checkpoint.is_file() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert victim.poll() is None, "training ended before it could be killed"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not (broken / TRAIN_REPORT).exists()
    run_ids = read_json(broken / RUN_FILE)["run_ids"]
    assert run_ids["csv"]
    assert read_json(broken / CHECKPOINTS_DIR / RESUME_FILE)["complete"] is False

    (broken / RUN_FILE).unlink()  # what `dvc repro` does to a non-persistent output
    out = finish(train_process(broken), broken)
    assert "resuming the interrupted run" in out
    finish(train_process(whole), whole)

    resumed, uninterrupted = read_json(broken / TRAIN_REPORT), read_json(whole / TRAIN_REPORT)
    assert 1 <= resumed["resumed_from_epoch"] < EPOCHS
    assert uninterrupted["resumed_from_epoch"] == 0
    for key in ("epochs", "global_step", "final_loss"):
        assert resumed[key] == uninterrupted[key], key
    assert read_json(broken / RUN_FILE)["run_ids"] == run_ids
    csv_runs = [p.name for p in (broken / "logs" / "csv").iterdir()]  # one run, continued
    assert csv_runs == [run_ids["csv"]]

    for root in (whole, broken):
        monkeypatch.chdir(root)
        run_validate(params, root)
    assert (broken / METRICS_REPORT).read_text() == (whole / METRICS_REPORT).read_text()
    weights = [(r / "models" / "extractor.safetensors").read_bytes() for r in (whole, broken)]
    assert weights[0] == weights[1]


def _plant_checkpoint(root: Path, params: Params, payload: dict[str, Any]) -> Path:
    folder = root / CHECKPOINTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    write_json(
        folder / RESUME_FILE,
        {"key": resume_key(params, root / MANIFEST), "run_ids": {}, "complete": False},
    )
    torch.save(payload, folder / LAST_CHECKPOINT)
    return folder / LAST_CHECKPOINT


class _Trap:
    """Unpickling this creates a file: proof that the checkpoint ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (open, (str(self.marker), "w"))


def test_checkpoint_with_pickled_object_is_refused(prepared: Path, workdir: Path) -> None:
    params = fast_params(train__sampler=resume_params().train.sampler.model_dump())
    shutil.copytree(prepared / "data", workdir / "data")
    marker = workdir / "code-ran"
    path = _plant_checkpoint(workdir, params, {"state_dict": {}, "trap": _Trap(marker)})
    with pytest.raises(EmbedlabError, match=r"last\.ckpt: refusing to load a checkpoint"):
        run_train(params, workdir)
    assert not marker.exists()
    assert path.exists()  # kept for the user to inspect; nothing was silently thrown away


def test_checkpoint_of_other_params_is_not_resumed(prepared: Path, workdir: Path) -> None:
    params = fast_params(train__sampler=resume_params().train.sampler.model_dump())
    shutil.copytree(prepared / "data", workdir / "data")
    path = _plant_checkpoint(workdir, fast_params(seed=7), {"not": "a lightning checkpoint"})
    report = run_train(params, workdir)
    assert report["resumed_from_epoch"] == 0
    state = json.loads((workdir / CHECKPOINTS_DIR / RESUME_FILE).read_text())
    assert state["key"] == resume_key(params, workdir / MANIFEST)
    assert state["complete"] is True
    assert torch.load(path, weights_only=True)["epoch"] == 0  # the new run's own checkpoint


def test_checkpoint_write_interrupted_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / LAST_CHECKPOINT
    io = AtomicCheckpointIO()
    io.save_checkpoint({"epoch": 1, "w": torch.ones(3)}, path)

    def dies_half_way(obj: Any, target: Any) -> None:
        Path(target).write_bytes(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"epoch": 2, "w": torch.zeros(3)}, path)
    assert io.load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == [LAST_CHECKPOINT]  # no temp file left
