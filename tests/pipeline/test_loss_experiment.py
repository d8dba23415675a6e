"""Switching the loss is one ``dvc exp run -S train.loss.name=...``: no other key to edit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.pipeline.test_pipeline import _run, copy_repo

pytestmark = pytest.mark.slow


def test_dvc_exp_run_with_supcon(tmp_path: Path) -> None:
    root = copy_repo(tmp_path, {"train": {"max_epochs": 1}, "tracking": {"loggers": ["csv"]}})
    _run(["dvc", "exp", "run", "-S", "train.loss.name=supcon", "-n", "supcon"], root)

    shown = json.loads(_run(["dvc", "exp", "show", "--json"], root).stdout)
    text = json.dumps(shown)
    assert '"supcon"' in text  # the experiment and its train.loss.name
    metrics = json.loads((root / "reports" / "metrics.json").read_text())
    assert 0.0 <= metrics["cmc@1"] <= 1.0
    train = json.loads((root / "reports" / "train.json").read_text())
    assert train["global_step"] > 0 and "final_loss" in train

    (rows,) = (root / "logs" / "csv").glob("*/metrics.csv")
    keys = {line.split(",")[1] for line in rows.read_text().splitlines()[1:]}
    assert {"train/loss", "train/pos_sim", "train/neg_sim", "train/active"} <= keys
    assert "train/active_tri" not in keys  # the triplet loss did not run
