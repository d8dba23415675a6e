"""The whole pipeline through DVC, in a temporary copy of the repo, with fast params."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow

FAST = {  # digits (bundled: no download) and a 1-block ViT, over the committed params.yaml
    "prepare": {"source": "digits", "digits_image_size": 16},
    "train": {
        "model": {
            "arch": "vit_tiny_patch16_224",
            "input_size": None,
            "timm_kwargs": {
                "img_size": 16,
                "patch_size": 8,
                "embed_dim": 32,
                "depth": 1,
                "num_heads": 2,
                "global_pool": "avg",
            },
        },
        "sampler": {"n_labels": 5, "n_instances": 16},
        "max_epochs": 2,
        "val_every_n_epochs": 1,
    },
}


def _merge(base: dict, extra: dict) -> dict:
    for key, value in extra.items():
        base[key] = _merge(base.get(key, {}), value) if isinstance(value, dict) else value
    return base


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": path}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    output = f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{output}"
    return result


def copy_repo(root: Path, params_override: dict | None = None) -> Path:
    """A fresh git repo at ``root`` holding the tracked files, with fast params, committed."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in files:
        source = REPO_ROOT / name
        outputs = name.startswith(("data/", "models/", "reports/")) or name == "dvc.lock"
        if source.is_file() and not outputs:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, root / name)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params = _merge(_merge(params, FAST), params_override or {})
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    _run(["git", "init", "-q"], root)
    _run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A"], root)
    _run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init"], root)
    return root


@pytest.fixture(scope="module")
def repro(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A fresh git + DVC repo holding the tracked files, after `dvc repro` with fast params,
    and what `dvc repro` printed."""
    root = copy_repo(tmp_path_factory.mktemp("repo"))
    done = _run(["dvc", "repro"], root)
    return root, done.stdout + done.stderr


@pytest.fixture(scope="module")
def repo(repro: tuple[Path, str]) -> Path:
    return repro[0]


def test_repro_prints_no_advertisement_and_no_deprecation_warning(repro: tuple[Path, str]) -> None:
    output = repro[1].lower()
    assert "litlogger" not in output and "tip:" not in output
    assert "deprecated" not in output and "deprecation" not in output


def test_every_stage_wrote_its_outputs(repo: Path) -> None:
    metrics = json.loads((repo / "reports" / "metrics.json").read_text())
    # headline numbers under short keys, flat, for `dvc exp show`
    assert {"cmc@1", "map@5", "n_queries", "baseline/raw_pixels/cmc@1"} <= set(metrics)
    assert all(isinstance(v, float | int) for v in metrics.values())
    assert metrics["n_queries"] == 896  # every validation digit is a query
    # one category (digits): no per-category table; every number is in metrics_all.json
    assert json.loads((repo / "reports" / "metrics_per_category.json").read_text()) == {}
    full = json.loads((repo / "reports" / "metrics_all.json").read_text())
    assert full["digits"]["cmc@1"] == full["OVERALL"]["cmc@1"] == metrics["cmc@1"]
    assert 0.0 <= full["OVERALL"]["cmc@1"] <= full["OVERALL"]["cmc@5"] <= 1.0
    assert {"precision@5", "pcf@0.5", "ndcg@5", "map@all", "mrr"} <= set(full["OVERALL"])
    assert {"ndcg@5", "map@all", "mrr"} <= set(full["baseline/raw_pixels"])
    # mrr >= cmc@1 (1 where the first item is relevant, more than 0 elsewhere)
    assert full["OVERALL"]["cmc@1"] <= full["OVERALL"]["mrr"] <= 1.0
    overall = {"cmc": {"1": metrics["cmc@1"]}}

    per_query = pd.read_csv(repo / "reports" / "per_query.csv")
    assert len(per_query) == 896
    assert {"row_id", "path", "label", "category", "cmc@1", "map@5"} <= set(per_query.columns)
    assert per_query["cmc@1"].mean() == pytest.approx(overall["cmc"]["1"], abs=1e-6)
    for key in ("ndcg@5", "map@all", "mrr"):
        assert per_query[key].mean() == pytest.approx(full["OVERALL"][key], abs=1e-6)

    for name in ("predictions", "worst_queries"):
        with Image.open(repo / "reports" / "images" / f"{name}.png") as image:
            assert image.width > 100 and image.height > 100

    assert (repo / "models" / "extractor.safetensors").stat().st_size > 1000
    # the re-ranker is off by default: the stage leaves a note, validate re-ranks nothing
    assert json.loads((repo / "models" / "reranker" / "reranker.json").read_text()) == {
        "enabled": False
    }
    assert json.loads((repo / "reports" / "reranked" / "reranked.json").read_text()) == {
        "enabled": False
    }
    assert not any(key.startswith("pairwise/") for key in full["OVERALL"])
    config = json.loads((repo / "models" / "extractor.json").read_text())
    assert config["preprocessing"]["input_size"] == [3, 16, 16]
    train = json.loads((repo / "reports" / "train.json").read_text())
    assert train["epochs"] == 2 and train["global_step"] > 0
    curve = json.loads((repo / "reports" / "plots" / "validation.json").read_text())
    assert [row["epoch"] for row in curve] == [0, 1, 2]  # untrained, then every epoch
    assert curve[-1]["cmc@1"] == pytest.approx(overall["cmc"]["1"])
    loss = json.loads((repo / "reports" / "plots" / "loss.json").read_text())
    assert [row["epoch"] for row in loss] == [1, 2]

    embeddings = np.load(repo / "data" / "embeddings" / "embeddings.npy")
    items = pd.read_parquet(repo / "data" / "embeddings" / "items.parquet")
    manifest = pd.read_csv(repo / "data" / "prepared" / "manifest.csv")
    assert embeddings.shape == (len(manifest), 32) and embeddings.dtype == np.float32
    assert items["path"].tolist() == manifest["path"].tolist()
    assert list(items["row_id"]) == list(range(len(manifest)))


def test_dvc_sees_metrics_and_a_second_repro_is_a_no_op(repo: Path) -> None:
    shown = _run(["dvc", "metrics", "show", "--json"], repo).stdout
    assert "cmc" in shown
    # one category: metrics_per_category.json is {}, not a default metric (no row of dashes)
    table = _run(["dvc", "metrics", "show"], repo).stdout
    assert "reports/metrics.json" in table and "metrics_per_category" not in table
    status = _run(["dvc", "status"], repo).stdout
    assert "up to date" in status.lower() or status.strip() == ""
    again = _run(["dvc", "repro"], repo).stdout
    assert "didn't change" in again or "is cached" in again.lower() or "up to date" in again.lower()


def test_dvc_plots_show_draws_the_curves_over_epochs(repo: Path) -> None:
    shown = json.loads(_run(["dvc", "plots", "show", "--json"], repo).stdout)
    plots = shown["data"]
    assert {"validation", "loss"} <= set(plots)
    (validation,) = plots["validation"]
    rows = validation["content"]["data"]["values"]
    assert {row["epoch"] for row in rows} == {0, 1, 2}
    assert {row["field"] for row in rows} == {"cmc@1", "map@5"}


def test_tensorboard_received_the_curves(repo: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs = list((repo / "logs" / "tensorboard").iterdir())
    assert len(runs) == 1  # train, validate and embed logged into one run
    events = EventAccumulator(str(runs[0]), size_guidance={"scalars": 0, "images": 0}).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/pos_dist", "train/neg_dist", "train/active_tri"} <= tags
    assert "val/OVERALL/cmc@1" in tags
    cmc = events.Scalars("val/OVERALL/cmc@1")
    assert cmc[0].step == 0  # the curve starts from the untrained model
    assert len(cmc) >= 3  # before training + after each of the 2 epochs (+ validate stage)
    assert "val/predictions" in events.Tags()["images"]


def test_dvc_status_marks_exactly_the_stages_that_run_an_edited_library_file(repo: Path) -> None:
    from dvc.repo import Repo

    from tests.pipeline.stage_deps import ROOT, STAGES, library_files, stage_closure

    runs = {stage: {p.relative_to(ROOT) for p in stage_closure(stage)} for stage in STAGES}
    dvc = Repo(str(repo))
    marked: dict[str, set[str]] = {}
    for file in library_files():
        rel = file.relative_to(ROOT)
        target = repo / rel
        original = target.read_bytes()
        target.write_bytes(original + b"\n# an edit\n")
        try:
            marked[str(rel)] = {name.split(":")[-1] for name in dvc.status()}
        finally:
            target.write_bytes(original)
        expected = {stage for stage in STAGES if rel in runs[stage]}
        assert marked[str(rel)] == expected, f"editing {rel}"
    assert dvc.status() == {}  # every edit undone
    # What a user relies on, spelled out:
    assert marked["src/embedlab/cli.py"] == set()
    assert marked["src/embedlab/config.py"] == set(STAGES)
    assert marked["src/embedlab/stages/prepare.py"] == {"prepare"}  # the rest follow its outputs
    assert marked["src/embedlab/stages/embed.py"] == {"embed"}
    assert marked["src/embedlab/embedding/searcher.py"] == set()  # search is not a stage
