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


PML_EXPERIMENTS = {
    # a PML pair loss with its arguments, fed by a PML miner
    "circle": (
        [
            "train.loss.name=pml.CircleLoss",
            "+train.loss.pml={m:0.25,gamma:64}",
            "train.miner.name=pml.BatchHardMiner",
        ],
        {"train/miner_num_triplets", "train/miner_hardest_pos_pair"},
    ),
    # a PML class-weight loss: its weights trained at train.loss.class_weights_lr
    "arcface": (
        ["train.loss.name=pml.ArcFaceLoss", "+train.loss.pml={margin:20.0,scale:32.0}"],
        {"train/avg_angle"},
    ),
    # a PML triplet loss on a PML miner's triplets, with a PML distance
    "triplet": (
        [
            "train.loss.name=pml.TripletMarginLoss",
            "train.miner.name=pml.TripletMarginMiner",
            "+train.miner.pml={margin:0.3,type_of_triplets:semihard}",
            "train.loss.distance.name=pml.CosineSimilarity",
        ],
        {"train/miner_num_triplets", "train/miner_avg_triplet_margin"},
    ),
}


def test_dvc_exp_run_with_pytorch_metric_learning_losses(tmp_path: Path) -> None:
    """Three pml.* losses train end to end through ``dvc exp run -S``, one key set each."""
    fast = {
        "train": {"max_epochs": 1, "log_images": False},
        "validate": {"baseline": {"raw_pixels": False}},
        "tracking": {"loggers": ["csv"]},
    }
    root = copy_repo(tmp_path, fast)
    for name, (sets, stats) in PML_EXPERIMENTS.items():
        _run(["git", "checkout", "--", "params.yaml"], root)  # each from the committed params
        args = [arg for s in sets for arg in ("-S", s)]
        _run(["dvc", "exp", "run", *args, "-n", name], root)
        metrics = json.loads((root / "reports" / "metrics.json").read_text())
        assert 0.0 <= metrics["cmc@1"] <= 1.0, name
        train = json.loads((root / "reports" / "train.json").read_text())
        assert train["global_step"] > 0 and "final_loss" in train, name
        run_id = json.loads((root / "reports" / "run.json").read_text())["run_ids"]["csv"]
        rows = (root / "logs" / "csv" / str(run_id) / "metrics.csv").read_text().splitlines()
        keys = {line.split(",")[1] for line in rows[1:]}
        assert {"train/loss", *stats} <= keys, (name, sorted(keys))
    shown = json.dumps(json.loads(_run(["dvc", "exp", "show", "--json"], root).stdout))
    assert all(f'"{name}"' in shown for name in PML_EXPERIMENTS)
    assert "pml.TripletMarginLoss" in shown
