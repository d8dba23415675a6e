"""ndcg@k, mrr and map@all against independent computations, through EmbeddingMetrics.

References: scikit-learn's ``ndcg_score`` and ``average_precision_score`` on tie-free
data, and a brute-force loop (exact integer distances, ties by gallery position, the
query itself and its sequence left out) on data full of ties.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from sklearn.metrics import average_precision_score, ndcg_score

from embedlab.cli import main
from embedlab.data.datasets import DatasetQueryGallery
from embedlab.errors import EmbedlabError
from embedlab.metrics import EmbeddingMetrics, calc_full_ranking_metrics, calc_ndcg
from embedlab.metrics.names import mlflow_name
from embedlab.retrieval.query_gallery import QueryGallery
from embedlab.retrieval.ranks import relevant_ranks
from embedlab.retrieval.results import retrieve
from embedlab.stages.validate import per_query_table
from tests.compare_helpers import blobs, write_images
from tests.unit.metric_cases import compute_quietly

NDCG_K = (1, 3, 10)


def _case(seed: int, *, ties: bool, split: bool) -> dict:
    """Items with some singleton labels (queries without a relevant item) and sequences."""
    rng = np.random.default_rng(seed)
    n = 60
    labels = rng.integers(0, 6, n)
    labels[:4] = [100, 101, 102, 103]  # one item each: nothing relevant for them
    if ties:  # small integers: exact distances, many equal
        x = rng.integers(0, 3, (n, 3)).astype(np.float32)
    else:
        x = (rng.normal(size=(6, 8))[labels % 6] + 1.2 * rng.normal(size=(n, 8))).astype(np.float32)
    is_query = rng.random(n) < 0.5 if split else np.ones(n, dtype=bool)
    is_gallery = ~is_query if split else np.ones(n, dtype=bool)
    is_gallery[labels == 0] = True  # some items on both sides
    is_query[:4] = True  # the singletons are queries
    sequence = np.where(rng.random(n) < 0.3, rng.integers(0, 4, n), -1)
    return {
        "embeddings": torch.from_numpy(x),
        "labels": torch.from_numpy(labels),
        "is_query": torch.from_numpy(is_query),
        "is_gallery": torch.from_numpy(is_gallery),
        "sequence": torch.from_numpy(sequence),
        "categories": [f"c{v % 2}" for v in labels],
    }


def _rankings(batch: dict) -> list[tuple[int, list[int], list[float]]]:
    """Per query (in order): (position, admissible gallery sorted by (distance, position),
    their distances in float64)."""
    x = batch["embeddings"].double().numpy()
    seq = batch["sequence"].numpy()
    gallery = np.nonzero(batch["is_gallery"].numpy())[0]
    out = []
    for q in np.nonzero(batch["is_query"].numpy())[0]:
        admissible = [g for g in gallery if g != q and not (seq[q] >= 0 and seq[g] == seq[q])]
        dist = {g: float(np.sum((x[q] - x[g]) ** 2)) for g in admissible}
        order = sorted(admissible, key=lambda g: (dist[g], g))
        out.append((int(q), order, [dist[g] for g in order]))
    return out


def _brute_force(batch: dict) -> dict[str, list[float]]:
    """ndcg@k, mrr, map@all and the category of each valid query, by plain loops."""
    labels = batch["labels"].numpy()
    out: dict[str, list] = {"mrr": [], "map@all": [], "category": []}
    out.update({f"ndcg@{k}": [] for k in NDCG_K})
    for q, order, _ in _rankings(batch):
        relevant = [labels[g] == labels[q] for g in order]
        n_rel = sum(relevant)
        if n_rel == 0:
            continue
        ranks = [i + 1 for i, r in enumerate(relevant) if r]
        out["mrr"].append(1.0 / ranks[0])
        out["map@all"].append(sum((j + 1) / r for j, r in enumerate(ranks)) / n_rel)
        for k in NDCG_K:
            dcg = sum(1 / math.log2(i + 2) for i in range(min(k, len(order))) if relevant[i])
            ideal = sum(1 / math.log2(i + 2) for i in range(min(k, n_rel)))
            out[f"ndcg@{k}"].append(dcg / ideal)
        out["category"].append(batch["categories"][q])
    return out


def _metric(**options) -> EmbeddingMetrics:
    return EmbeddingMetrics(
        cmc_top_k=(1,),
        precision_top_k=(),
        map_top_k=(),
        pcf_variance=(),
        ndcg_top_k=NDCG_K,
        full_ranking_metrics=True,
        **options,
    )


@pytest.mark.parametrize("split", [False, True])
@pytest.mark.parametrize("r_metrics", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_equal_to_a_brute_force_loop_on_tied_distances(
    seed: int, split: bool, r_metrics: bool
) -> None:
    batch = _case(seed, ties=True, split=split)
    metric = _metric(r_metrics=r_metrics, chunk_size=7)
    result = compute_quietly(metric, batch)
    expected = _brute_force(batch)
    per_query = metric.metrics_unreduced["OVERALL"]
    assert len(expected["mrr"]) == result["OVERALL"]["n_queries"] > 0
    assert result["OVERALL"]["n_queries_no_relevant"] >= 4  # the singletons (and maybe more)
    for name in ("mrr", "map@all"):
        np.testing.assert_allclose(per_query[name].numpy(), expected[name], rtol=0, atol=1e-12)
        assert result["OVERALL"][name] == pytest.approx(np.mean(expected[name]), abs=1e-12)
    for k in NDCG_K:
        np.testing.assert_allclose(per_query["ndcg"][k].numpy(), expected[f"ndcg@{k}"], atol=1e-6)
    # relevant items far beyond the kNN's width (10 without the R-metrics) were ranked too
    assert min(expected["map@all"]) < 0.5
    # per category: the mean of the category's queries
    categories = np.array(expected["category"])
    for category in ("c0", "c1"):
        chosen = categories == category
        assert result[category]["mrr"] == pytest.approx(
            np.mean(np.array(expected["mrr"])[chosen]), abs=1e-12
        )
        assert result[category]["ndcg"][3] == pytest.approx(
            np.mean(np.array(expected["ndcg@3"])[chosen]), abs=1e-6
        )
    # consistent with the top-k metrics of the same ranking
    assert torch.equal(per_query["mrr"] == 1.0, per_query["cmc"][1] == 1.0)


@pytest.mark.parametrize("split", [False, True])
def test_equal_to_scikit_learn_on_tie_free_data(split: bool) -> None:
    batch = _case(3, ties=False, split=split)
    metric = _metric()
    compute_quietly(metric, batch)
    per_query = metric.metrics_unreduced["OVERALL"]
    labels = batch["labels"].numpy()
    valid = [
        (q, order, d) for q, order, d in _rankings(batch) if (labels[order] == labels[q]).any()
    ]
    assert len(valid) == len(per_query["mrr"]) > 10
    for i, (q, order, dist) in enumerate(valid):
        y_true = (labels[order] == labels[q]).astype(float)[None]
        y_score = -np.asarray(dist)[None]
        assert len(set(dist)) == len(dist)  # tie-free: sklearn's tie averaging does not apply
        for k in NDCG_K:
            assert float(per_query["ndcg"][k][i]) == pytest.approx(
                ndcg_score(y_true, y_score, k=k, ignore_ties=True), abs=1e-6
            )
        assert float(per_query["map@all"][i]) == pytest.approx(
            average_precision_score(y_true[0], y_score[0]), abs=1e-9
        )


def test_ties_are_broken_by_gallery_position_not_averaged() -> None:
    # Query 0 sees items 1 (irrelevant) and 2 (relevant) at the same distance: the
    # ranking puts 1 first, so ndcg@1 = 0, mrr = 1/2; scikit-learn's default
    # (ignore_ties=False) would average the tied group and give 0.5 for ndcg@1.
    x = torch.tensor([[0.0], [1.0], [-1.0]])
    metric = EmbeddingMetrics(
        cmc_top_k=(1,), precision_top_k=(), map_top_k=(), pcf_variance=(),
        ndcg_top_k=(1,), full_ranking_metrics=True,
    )  # fmt: skip
    batch = {
        "embeddings": x,
        "labels": torch.tensor([0, 1, 0]),
        "is_query": torch.tensor([True, False, False]),
        "is_gallery": torch.tensor([False, True, True]),
    }
    result = compute_quietly(metric, batch)
    assert result["OVERALL"]["ndcg"] == {1: 0.0}
    assert result["OVERALL"]["mrr"] == 0.5
    assert result["OVERALL"]["map@all"] == 0.5
    assert ndcg_score([[0, 1]], [[0.0, 0.0]], k=1) == pytest.approx(0.5)


def test_relevant_ranks_do_not_depend_on_the_chunk_size_nor_the_head_width() -> None:
    batch = _case(5, ties=True, split=False)
    qg = QueryGallery.from_columns(batch["embeddings"], batch["labels"], sequence=batch["sequence"])
    reference = retrieve(qg, 1, full_ranking=True).relevant_ranks
    assert reference is not None
    for width, chunk in [(1, 3), (5, None), (30, 1), (200, 16)]:
        ranks = retrieve(qg, width, chunk_size=chunk, full_ranking=True).relevant_ranks
        assert ranks is not None and torch.equal(ranks, reference)
    n_relevant = retrieve(qg, 1).n_relevant
    assert torch.equal((reference > 0).sum(dim=1), n_relevant)


def test_relevant_ranks_of_an_empty_gallery() -> None:
    out = relevant_ranks(
        torch.zeros(2, 3), torch.zeros(0, 3), torch.tensor([0, 1]),
        torch.zeros(0, dtype=torch.int64), torch.full((2, 1), -1), torch.tensor([0, 0]),
    )  # fmt: skip
    assert out.shape == (2, 0)
    m = calc_full_ranking_metrics(out, torch.tensor([0, 0]))
    assert m["mrr"].tolist() == [0.0, 0.0] and m["map@all"].tolist() == [0.0, 0.0]


def test_hand_values() -> None:
    # relevant at ranks 2 and 4 of 4, n = 2
    rel = torch.tensor([[False, True, False, True]])
    ndcg = calc_ndcg(rel, torch.tensor([2]), top_k=(1, 2, 4, 9))
    ideal = 1 + 1 / math.log2(3)
    assert ndcg[1].item() == 0.0
    assert ndcg[2].item() == pytest.approx((1 / math.log2(3)) / ideal)
    assert ndcg[4].item() == pytest.approx((1 / math.log2(3) + 1 / math.log2(5)) / ideal)
    assert ndcg[9].item() == ndcg[4].item()
    full = calc_full_ranking_metrics(torch.tensor([[2, 4]]), torch.tensor([2]))
    assert full["map@all"].item() == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert full["mrr"].item() == 0.5
    with pytest.raises(EmbedlabError, match="ndcg_top_k must hold positive integers"):
        calc_ndcg(rel, torch.tensor([2]), top_k=(0,))


def test_names_in_the_table_and_the_trackers() -> None:
    metric = _metric(postprocess="aqe")
    compute_quietly(metric, _case(0, ties=False, split=False))
    names = metric.table.tracker_names()
    for key in ("ndcg@1", "ndcg@10", "mrr", "map@all", "aqe/ndcg@3"):
        assert f"val/OVERALL/{key}" in names
        assert f"val/c0/{key}" in names
    # a post-processor orders only its head: no full-ranking metrics after it
    assert not any(key.endswith(("aqe/mrr", "aqe/map@all")) for key in names)
    assert list(metric.table.per_query_columns())[:5] == [
        "cmc@1", "ndcg@1", "ndcg@3", "ndcg@10", "map@all"
    ]  # fmt: skip
    assert mlflow_name("val/OVERALL/map@all") == "val/OVERALL/map_at_all"


def test_off_by_default_in_the_oml_shaped_api() -> None:
    metric = EmbeddingMetrics(pcf_variance=())
    result = compute_quietly(metric, _case(0, ties=False, split=False))
    assert not {"ndcg", "mrr", "map@all"} & set(result["OVERALL"])
    assert metric.results is not None and metric.results.relevant_ranks is None


def test_validate_per_query_file_carries_them_and_compare_reports_them(tmp_path: Path) -> None:
    labels = [i % 4 for i in range(40)]
    for name, spread, lr in [("run-a", 0.45, 0.001), ("run-b", 0.35, 0.003)]:
        root = tmp_path / name
        paths = write_images(root, labels)
        metric = _metric(extra_keys=("paths",))
        batch = {
            "embeddings": torch.as_tensor(blobs(labels, spread, seed=len(name) + int(lr * 1e3))),
            "labels": torch.tensor(labels),
            "paths": paths,
        }
        compute_quietly(metric, batch)
        manifest = pd.read_csv(root / "data" / "prepared" / "manifest.csv")
        dataset = DatasetQueryGallery(manifest.assign(row_id=range(40)), root / "data" / "prepared")
        assert metric.results is not None
        (root / "reports").mkdir()
        per_query_table(metric.results, metric.table, dataset).to_csv(
            root / "reports" / "per_query.csv", index=False
        )
        (root / "params.yaml").write_text(yaml.safe_dump({"seed": 0, "train": {"lr": lr}}))
    out = tmp_path / "out"
    assert main(["compare", str(tmp_path / "run-a"), str(tmp_path / "run-b"), "--out", str(out),
                 "--no-trackers"]) == 0  # fmt: skip
    report = json.loads((out / "compare.json").read_text())
    pa = pd.read_csv(tmp_path / "run-a" / "reports" / "per_query.csv")
    pb = pd.read_csv(tmp_path / "run-b" / "reports" / "per_query.csv")
    assert {"ndcg@1", "ndcg@3", "ndcg@10", "map@all", "mrr"} <= set(pa.columns)
    for key in ("ndcg@3", "map@all", "mrr"):
        assert report["metrics"][key]["a"] == pytest.approx(pa[key].mean(), abs=1e-12)
        assert report["metrics"][key]["b"] == pytest.approx(pb[key].mean(), abs=1e-12)
