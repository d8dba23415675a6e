"""Every loss trains end to end through the train stage and logs its own statistics."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from embedlab.lightning.checkpoint import LAST_CHECKPOINT
from embedlab.registries import LOSSES, PML_PREFIX
from embedlab.stages.common import CHECKPOINTS_DIR, MODELS_DIR
from embedlab.stages.prepare import run_prepare
from embedlab.stages.train import run_train
from tests.conftest import fast_params

pytestmark = [pytest.mark.slow, pytest.mark.integration]

STATS = {
    "triplet": {"pos_dist", "neg_dist", "active_tri"},
    "contrastive": {"pos_dist", "neg_dist", "active_pos", "active_neg"},
    "multi_similarity": {"pos_sim", "neg_sim", "pos_loss", "neg_loss"},
    "supcon": {"pos_sim", "neg_sim", "active"},
    "arcface": {"avg_angle", "accuracy"},
    "subcenter_arcface": {"avg_angle", "accuracy"},
    "proxy_anchor": {"pos_sim", "neg_sim", "pos_loss", "neg_loss"},
}
CLASS_WEIGHTS = {"arcface": "W", "subcenter_arcface": "W", "proxy_anchor": "proxies"}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("prepared")
    run_prepare(fast_params(), root)
    return root


def train(prepared: Path, root: Path, **overrides: Any) -> tuple[dict, pd.DataFrame]:
    root.mkdir()
    (root / "data").symlink_to(prepared / "data", target_is_directory=True)
    report = run_train(fast_params(**overrides), root)
    (metrics,) = (root / "logs" / "csv").glob("*/metrics.csv")
    return report, pd.read_csv(metrics)


OURS = [name for name in LOSSES.names if not name.startswith(PML_PREFIX)]
"""Our losses (the pml.* ones: tests/unit/test_pml_loss.py, tests/pipeline/)."""


def test_every_loss_has_a_stats_entry_here() -> None:
    assert set(STATS) == set(OURS)


@pytest.mark.parametrize("name", OURS)
def test_loss_trains_and_logs_its_statistics(name: str, prepared: Path, tmp_path: Path) -> None:
    report, rows = train(prepared, tmp_path / name, train__loss__name=name)
    assert math.isfinite(report["final_loss"]) and report["global_step"] > 0
    steps = rows[rows["key"] == "train/loss"]
    assert len(steps) == report["global_step"]
    assert all(math.isfinite(v) for v in steps["value"])
    logged = set(rows["key"])
    assert {f"train/{stat}" for stat in STATS[name]} <= logged, sorted(logged)

    checkpoint = torch.load(
        tmp_path / name / CHECKPOINTS_DIR / LAST_CHECKPOINT, map_location="cpu", weights_only=True
    )
    exported = load_file(tmp_path / name / MODELS_DIR / "extractor.safetensors")
    if name in CLASS_WEIGHTS:
        weight = checkpoint["state_dict"][f"criterion.{CLASS_WEIGHTS[name]}"]
        assert weight.shape[int(name == "proxy_anchor")] == 32  # the model's embedding size
        # their own param group (at train.loss.class_weights_lr) in the optimizer state
        groups = checkpoint["optimizer_states"][0]["param_groups"]
        assert len(groups) == 2 and groups[1]["initial_lr"] == 0.01
    assert not any(key.startswith("criterion") for key in exported)
    assert not any(CLASS_WEIGHTS.get(name, "-") in key.split(".") for key in exported)


def test_pair_loss_with_a_memory_bank_trains_and_saves_the_bank(
    prepared: Path, tmp_path: Path
) -> None:
    report, rows = train(
        prepared,
        tmp_path / "memory",
        train__loss__name="supcon",
        train__miner={"name": "multi_similarity", "memory_size": 48},
    )
    assert math.isfinite(report["final_loss"])
    memory = rows[rows["key"] == "train/memory_items"]["value"].tolist()
    assert memory[:4] == [12.0, 24.0, 36.0, 48.0] and max(memory) == 48.0  # batches of 3 x 4
    state = torch.load(
        tmp_path / "memory" / CHECKPOINTS_DIR / LAST_CHECKPOINT,
        map_location="cpu",
        weights_only=True,
    )["state_dict"]
    assert state["criterion.memory.embeddings"].shape == (48, 32)
    assert bool(state["criterion.memory.filled"])


def test_a_pml_class_weight_loss_trains_its_weights_like_ours(
    prepared: Path, tmp_path: Path
) -> None:
    report, rows = train(
        prepared,
        tmp_path / "pml",
        train__loss={"name": "pml.ArcFaceLoss", "class_weights_lr": 0.02},
    )
    assert math.isfinite(report["final_loss"])
    assert "train/avg_angle" in set(rows["key"])  # PML's statistic, as train/<stat>
    checkpoint = torch.load(
        tmp_path / "pml" / CHECKPOINTS_DIR / LAST_CHECKPOINT, map_location="cpu", weights_only=True
    )
    assert checkpoint["state_dict"]["criterion.loss.W"].shape == (32, 5)  # 5 train digits
    groups = checkpoint["optimizer_states"][0]["param_groups"]
    assert len(groups) == 2 and groups[1]["initial_lr"] == 0.02
    exported = load_file(tmp_path / "pml" / MODELS_DIR / "extractor.safetensors")
    assert not any(key.startswith("criterion") for key in exported)


def test_category_balanced_batches_train(prepared: Path, tmp_path: Path) -> None:
    """digits has one category: one category x 3 labels x 4 items per batch."""
    sampler = {"name": "category_balance", "n_categories": 1, "n_labels": 3, "n_instances": 4}
    report, rows = train(prepared, tmp_path / "category", train__sampler=sampler)
    assert math.isfinite(report["final_loss"]) and report["global_step"] > 0
    assert len(rows[rows["key"] == "train/loss"]) == report["global_step"]
