"""Shared fixtures: tiny image folders and fast params for end-to-end runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from embedlab.config import Params, parse_params

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

REPO_ROOT = Path(__file__).resolve().parents[1]


def fast_params(**overrides: object) -> Params:
    """Params for a seconds-long run: a 1-block ViT, 1 epoch, small batches."""
    raw: dict = {
        "prepare": {"source": "digits", "digits_image_size": 16},
        "train": {
            "model": {
                "arch": "vit_tiny_patch16_224",
                "input_size": None,
                "timm_kwargs": {
                    "img_size": 16,
                    "patch_size": 8,
                    "depth": 1,
                    "embed_dim": 32,
                    "num_heads": 2,
                },
            },
            "sampler": {"n_labels": 3, "n_instances": 4},
            "max_epochs": 1,
            "log_images": True,
        },
        "validate": {"batch_size": 128, "images": {"n_queries": 2, "n_worst": 2, "top_k": 3}},
        "tracking": {"loggers": ["csv"]},
    }
    for dotted, value in overrides.items():
        node = raw
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return parse_params(raw)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory standing in for the repo root."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
