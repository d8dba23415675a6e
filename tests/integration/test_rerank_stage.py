"""The rerank stage end to end: prepare -> train -> rerank -> validate, plain beside re-ranked."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest

from embedlab.compare.command import run_compare
from embedlab.io import read_json
from embedlab.stages.common import (
    METRICS_REPORT,
    PER_QUERY_REPORT,
    RERANK_REPORT,
    RERANKED_RUN,
    RERANKER_DIR,
)
from embedlab.stages.prepare import run_prepare
from embedlab.stages.rerank import run_rerank
from embedlab.stages.train import run_train
from embedlab.stages.validate import run_validate
from tests.conftest import fast_params

pytestmark = pytest.mark.slow

RERANK = {"enabled": True, "top_n": 3, "max_pairs": 300, "epochs": 1, "batch_size": 32}


def test_rerank_stage_trains_and_validate_reports_both(workdir: Path) -> None:
    off = fast_params()
    run_prepare(off, workdir)
    run_train(off, workdir)
    assert run_rerank(off, workdir) == {"enabled": False}
    run_validate(off, workdir)
    plain = read_json(workdir / METRICS_REPORT)
    assert not any(k.startswith("pairwise/") for k in plain)  # off: validate unchanged
    assert read_json(workdir / RERANKED_RUN / "reranked.json") == {"enabled": False}

    on = fast_params(rerank=RERANK)
    report = run_rerank(on, workdir)
    assert report["enabled"] and report["pairs"] <= 300 and 0.0 <= report["pair_accuracy"] <= 1.0
    assert read_json(workdir / RERANK_REPORT) == report
    config = read_json(workdir / RERANKER_DIR / "reranker.json")
    assert len(config["extractor_sha256"]) == 64 and config["top_n"] == 3
    run_validate(on, workdir)
    both = read_json(workdir / METRICS_REPORT)
    for key in ("cmc@1", "map@5"):
        assert both[key] == plain[key]  # the plain numbers do not move
        assert 0.0 <= both[f"pairwise/{key}"] <= 1.0
    # the re-ranked run folder: its own per-query file, the same queries
    per_query = pd.read_csv(workdir / PER_QUERY_REPORT)
    reranked = pd.read_csv(workdir / RERANKED_RUN / PER_QUERY_REPORT)
    assert reranked["row_id"].tolist() == per_query["row_id"].tolist()
    assert reranked["cmc@1"].mean() == pytest.approx(both["pairwise/cmc@1"], abs=1e-6)
    assert per_query["pairwise/cmc@1"].tolist() == reranked["cmc@1"].tolist()
    # the trackers got the re-ranker's curves
    logged = "".join(p.read_text() for p in (workdir / "logs" / "csv").rglob("metrics.csv"))
    assert "rerank/loss" in logged and "rerank/pair_accuracy" in logged
    # embedlab compare: plain vs re-ranked, query by query
    stream = io.StringIO()
    out = run_compare(
        [str(workdir), str(workdir / RERANKED_RUN)],
        workdir / "cmp",
        trackers=False,
        repo=workdir,
        stream=stream,
    )
    compared = json.loads((out / "compare.json").read_text())
    assert compared["n_queries"] == len(per_query)
    delta = compared["metrics"]["cmc@1"]["delta"]
    assert delta == pytest.approx(both["pairwise/cmc@1"] - both["cmc@1"], abs=1e-6)
    assert "cmc@1" in stream.getvalue()


def test_pairs_come_from_the_rerank_split_when_the_manifest_has_one(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Images the extractor never trained on (split ``rerank``) give the pairs; never the
    train items, never the validation ones."""
    import embedlab.stages.rerank as stage
    from embedlab.stages.common import MANIFEST

    on = fast_params(rerank=RERANK)
    run_prepare(on, workdir)
    run_train(on, workdir)
    manifest = pd.read_csv(workdir / MANIFEST)
    train_rows = manifest.index[manifest["split"] == "train"]
    held_out = train_rows[::3]  # as if prepare had kept a third of them from the extractor
    manifest.loc[held_out, "split"] = "rerank"
    manifest.to_csv(workdir / MANIFEST, index=False)
    mined_over = []
    real_mine = stage.mine_neighbour_pairs

    def spy(embeddings, labels, *args, **kwargs):
        mined_over.append(labels.tolist())
        return real_mine(embeddings, labels, *args, **kwargs)

    monkeypatch.setattr(stage, "mine_neighbour_pairs", spy)
    report = run_rerank(on, workdir)
    assert report["pairs_from"] == "rerank"
    assert mined_over == [manifest.loc[held_out, "label"].tolist()]
