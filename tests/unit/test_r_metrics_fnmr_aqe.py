"""map@R, r_precision (vs PML), FNMR@FMR (vs brute force) and AQE re-ranking (vs dense)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from embedlab.config import parse_params
from embedlab.errors import EmbedlabError
from embedlab.metrics import EmbeddingMetrics, calc_r_metrics
from embedlab.metrics.verification import calc_fnmr_at_fmr, calc_fnmr_at_fmr_chunked
from embedlab.retrieval.rerank import expand_queries


def _compute(metric: EmbeddingMetrics, batch: dict) -> dict:
    metric.setup(num_samples=len(batch["labels"]))
    metric.update_data(batch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return metric.compute_metrics()


def _random_batch(n: int, dim: int, n_labels: int, seed: int, split: bool) -> dict:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, n_labels, (n,), generator=generator)
    centres = torch.randn(n_labels, dim, generator=generator)
    x = centres[labels] + 1.5 * torch.randn(n, dim, generator=generator)
    is_query = torch.arange(n) < n // 3 if split else torch.ones(n, dtype=torch.bool)
    is_gallery = ~is_query if split else torch.ones(n, dtype=torch.bool)
    return {
        "embeddings": x,
        "labels": labels,
        "is_query": is_query,
        "is_gallery": is_gallery,
        "categories": [f"c{int(v) % 3}" for v in labels],
    }


# ---------------------------------------------------------------- map@R, r_precision


def test_r_metrics_hand_values() -> None:
    # R = 2: relevant at ranks 1 and 3 -> r_precision 1/2, map@R = (1/1) / 2.
    # R = 3: relevant at ranks 2, 3 -> r_precision 2/3, map@R = (1/2 + 2/3) / 3.
    rel = torch.tensor([[True, False, True, True], [False, True, True, False]])
    m = calc_r_metrics(rel, torch.tensor([2, 3]))
    torch.testing.assert_close(m["r_precision"], torch.tensor([0.5, 2 / 3], dtype=torch.float64))
    torch.testing.assert_close(
        m["map@R"], torch.tensor([0.5, (1 / 2 + 2 / 3) / 3], dtype=torch.float64)
    )
    with pytest.raises(EmbedlabError, match="largest R"):
        calc_r_metrics(rel, torch.tensor([5, 1]))


def test_r_metrics_in_embedding_metrics_hand_values() -> None:
    # 1-d points, every item query and gallery; label 0 = {0, 1, 4}, label 1 = {2, 3}.
    x = torch.tensor([[0.0], [1.0], [1.6], [2.5], [3.0]])
    labels = torch.tensor([0, 0, 1, 1, 0])
    metric = EmbeddingMetrics(
        cmc_top_k=(1,), precision_top_k=(), map_top_k=(), pcf_variance=(), r_metrics=True
    )
    result = _compute(metric, {"embeddings": x, "labels": labels})
    # Item 0 (R=2): 1 (hit), 2 -> rp 1/2, map 1/2.  Item 1: 2, 0 (hit) -> 1/2, (1/2)/2.
    # Item 2 (R=1): 1 -> 0.  Item 3 (R=1): 4 -> 0.  Item 4 (R=2): 3, 2 -> 0, 0.
    assert result["OVERALL"]["r_precision"] == pytest.approx(0.2)
    assert result["OVERALL"]["map@R"] == pytest.approx(0.15)
    assert metric.metrics_unreduced["OVERALL"]["map@R"].tolist() == [0.5, 0.25, 0.0, 0.0, 0.0]
    assert metric.results.retrieved.shape[1] == 1  # stored lists keep the cut-off width


@pytest.mark.parametrize("split", [False, True])
def test_r_metrics_equal_pytorch_metric_learning(split: bool) -> None:
    from pytorch_metric_learning.distances import LpDistance
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import CustomKNN

    batch = _random_batch(240, 8, 12, seed=4, split=split)
    metric = EmbeddingMetrics(
        cmc_top_k=(1,),
        precision_top_k=(),
        map_top_k=(5,),
        pcf_variance=(),
        r_metrics=True,
        chunk_size=37,
    )
    result = _compute(metric, batch)
    calculator = AccuracyCalculator(
        include=("mean_average_precision_at_r", "r_precision", "precision_at_1"),
        k="max_bin_count",
        avg_of_avgs=False,
        knn_func=CustomKNN(LpDistance(normalize_embeddings=False)),
    )
    x, labels = batch["embeddings"], batch["labels"]
    if split:
        q, g = batch["is_query"], batch["is_gallery"]
        expected = calculator.get_accuracy(
            x[q], labels[q], x[g], labels[g], ref_includes_query=False
        )
    else:
        expected = calculator.get_accuracy(x, labels)  # query is reference: self excluded
    overall = result["OVERALL"]
    assert overall["map@R"] == pytest.approx(expected["mean_average_precision_at_r"], abs=1e-12)
    assert overall["r_precision"] == pytest.approx(expected["r_precision"], abs=1e-12)
    assert overall["cmc"][1] == pytest.approx(expected["precision_at_1"], abs=1e-12)
    for category in ("c0", "c1", "c2"):  # reported per category too
        assert 0.0 <= result[category]["map@R"] <= 1.0
        assert (
            len(metric.metrics_unreduced[category]["r_precision"]) == result[category]["n_queries"]
        )


def test_r_metrics_use_the_top_r_beyond_the_cut_offs() -> None:
    # One label with 150 items: R = 149 > every cut-off, all found in the chunked kNN.
    x = torch.randn(170, 4, generator=torch.Generator().manual_seed(0))
    labels = torch.cat([torch.zeros(150), torch.arange(1, 21)]).long()
    x[:150] *= 0.01  # label 0 is a tight cluster: its queries are perfect
    metric = EmbeddingMetrics(
        cmc_top_k=(1,),
        precision_top_k=(),
        map_top_k=(),
        pcf_variance=(),
        r_metrics=True,
        chunk_size=64,
    )
    result = _compute(metric, {"embeddings": x, "labels": labels})
    assert result["OVERALL"]["n_queries"] == 150
    assert result["OVERALL"]["map@R"] == pytest.approx(1.0)
    assert result["OVERALL"]["r_precision"] == pytest.approx(1.0)


# ---------------------------------------------------------------- FNMR@FMR


def _brute_force_fnmr(batch: dict, fmr_vals: tuple, metric: str) -> dict:
    x, labels = batch["embeddings"], batch["labels"]
    q = torch.nonzero(batch["is_query"]).squeeze(1)
    g = torch.nonzero(batch["is_gallery"]).squeeze(1)
    if metric == "euclidean":
        dist = torch.cdist(x[q].double(), x[g].double())
    else:
        qn = torch.nn.functional.normalize(x[q].double(), dim=1)
        gn = torch.nn.functional.normalize(x[g].double(), dim=1)
        dist = 1 - qn @ gn.T
    admissible = q.unsqueeze(1) != g.unsqueeze(0)
    seq = batch.get("sequence")
    if seq is not None:
        sq, sg = seq[q].unsqueeze(1), seq[g].unsqueeze(0)
        admissible &= ~((sq == sg) & (sq >= 0))
    same = labels[q].unsqueeze(1) == labels[g].unsqueeze(0)
    return calc_fnmr_at_fmr(dist[admissible & same], dist[admissible & ~same], fmr_vals)


def test_fnmr_at_fmr_hand_values_as_oml() -> None:
    # OML's docstring example.
    pos = torch.tensor([0.0, 0, 1, 1, 2, 2, 5, 5, 9, 9])
    neg = torch.tensor([3.0, 3, 4, 4, 6, 6, 7, 7, 8, 8])
    assert calc_fnmr_at_fmr(pos, neg, (0.1, 0.5)) == {0.1: 0.4, 0.5: 0.2}


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("split", [False, True])
def test_fnmr_chunked_equals_brute_force(metric: str, split: bool) -> None:
    batch = _random_batch(150, 6, 5, seed=7, split=split)
    batch["sequence"] = torch.randint(-1, 20, (150,), generator=torch.Generator().manual_seed(8))
    fmr_vals = (0.0, 0.001, 0.01, 0.1, 0.37, 0.5, 1.0)
    expected = _brute_force_fnmr(batch, fmr_vals, metric)
    q, g = batch["is_query"], batch["is_gallery"]
    qp, gp = torch.nonzero(q).squeeze(1), torch.nonzero(g).squeeze(1)
    x, labels, seq = batch["embeddings"], batch["labels"], batch["sequence"]
    for chunk_size in (7, 64, None):
        got = calc_fnmr_at_fmr_chunked(
            x[qp],
            x[gp],
            labels[qp],
            labels[gp],
            fmr_vals,
            metric=metric,
            chunk_size=chunk_size,
            query_ids=qp,
            gallery_ids=gp,
            query_sequence=seq[qp],
            gallery_sequence=seq[gp],
        )
        assert got.keys() == expected.keys()
        for f in fmr_vals:
            assert got[f] == pytest.approx(expected[f], abs=2 / 150**2), f
    metric_obj = EmbeddingMetrics(pcf_variance=(), fnmr_fmr=(0.1,), distance=metric)
    result = _compute(metric_obj, batch)
    assert result["OVERALL"]["fnmr@fmr"][0.1] == pytest.approx(expected[0.1], abs=2 / 150**2)


# ---------------------------------------------------------------- AQE


def _dense_ranking(queries, gallery, q_ids, g_ids, k):
    dist = torch.cdist(queries.double(), gallery.double())
    dist[q_ids.unsqueeze(1) == g_ids.unsqueeze(0)] = float("inf")
    order = np.lexsort((np.broadcast_to(np.arange(len(g_ids)), dist.shape), dist.numpy()), axis=1)
    return torch.from_numpy(order[:, :k].copy())


def test_expand_queries_hand_values() -> None:
    q = torch.tensor([[2.0, 0.0]])
    g = torch.tensor([[0.0, 4.0], [9.0, 9.0]])
    # mean of (2, 0) and (0, 4) is (1, 2), rescaled to the query's norm 2.
    expected = torch.tensor([[1.0, 2.0]]) / 5**0.5 * 2
    torch.testing.assert_close(expand_queries(q, g, torch.tensor([[0, -1]]), n=2), expected)


@pytest.mark.parametrize("split", [False, True])
def test_aqe_equals_a_dense_reference(split: bool) -> None:
    batch = _random_batch(120, 5, 6, seed=11, split=split)
    batch["embeddings"] = torch.nn.functional.normalize(batch["embeddings"], dim=1)
    metric = EmbeddingMetrics(
        cmc_top_k=(1, 3),
        precision_top_k=(3,),
        map_top_k=(3,),
        pcf_variance=(),
        r_metrics=True,
        postprocess="aqe",
        aqe_k=2,
        chunk_size=29,
    )
    result = _compute(metric, batch)
    x, labels = batch["embeddings"], batch["labels"]
    qp = torch.nonzero(batch["is_query"]).squeeze(1)
    gp = torch.nonzero(batch["is_gallery"]).squeeze(1)
    first = _dense_ranking(x[qp], x[gp], qp, gp, 2)
    expanded = (x[qp] + x[gp][first].sum(dim=1)) / 3
    expanded = torch.nn.functional.normalize(expanded, dim=1)  # queries are unit-norm
    ranking = _dense_ranking(expanded, x[gp], qp, gp, len(gp) - (0 if split else 1))
    relevant = labels[gp][ranking] == labels[qp].unsqueeze(1)
    n_rel = relevant.sum(dim=1)
    valid = n_rel > 0
    cmc1 = relevant[:, 0].double()
    prec3 = relevant[:, :3].sum(1) / n_rel.clamp(max=3, min=1)
    r_prec = torch.tensor(
        [relevant[i, : int(n_rel[i])].sum() / max(int(n_rel[i]), 1) for i in range(len(qp))],
        dtype=torch.float64,
    )
    overall = result["OVERALL"]
    assert overall["aqe/cmc"][1] == pytest.approx(float(cmc1[valid].mean()))
    assert overall["aqe/precision"][3] == pytest.approx(float(prec3[valid].double().mean()))
    assert overall["aqe/r_precision"] == pytest.approx(float(r_prec[valid].mean()))
    assert set(overall) >= {"cmc", "aqe/cmc", "aqe/map", "map@R", "aqe/map@R"}
    assert "aqe/cmc" in result["c1"]


def test_validate_params_for_the_new_metrics() -> None:
    cfg = parse_params(
        {"validate": {"r_metrics": True, "fnmr_fmr": [0.01], "postprocess": "aqe", "aqe_k": 3}}
    ).validate
    assert (cfg.r_metrics, cfg.fnmr_fmr, cfg.postprocess, cfg.aqe_k) == (True, [0.01], ["aqe"], 3)
    with pytest.raises(EmbedlabError, match="fnmr_fmr"):
        parse_params({"validate": {"fnmr_fmr": [5]}})
    with pytest.raises(EmbedlabError, match="postprocess"):
        parse_params({"validate": {"postprocess": "magic"}})


# ---------------------------------------------------------------- k-reciprocal


def _dense_k_reciprocal(x: np.ndarray, k1: int, k2: int, lambda_value: float) -> np.ndarray:
    """Zhong et al.'s reference re-ranking on the full matrix (float64, probe = gallery = x)."""
    n = len(x)
    sq = (x**2).sum(1)
    dist = sq[:, None] + sq[None, :] - 2 * x @ x.T
    original = np.transpose(dist / np.max(dist, axis=0))
    initial_rank = np.argsort(original, kind="stable").astype(np.int64)
    v = np.zeros_like(original)
    for i in range(n):
        forward = initial_rank[i, : k1 + 1]
        backward = initial_rank[forward, : k1 + 1]
        recip = forward[np.where(backward == i)[0]]
        expansion = recip
        for candidate in recip:
            c_forward = initial_rank[candidate, : int(np.around(k1 / 2)) + 1]
            c_backward = initial_rank[c_forward, : int(np.around(k1 / 2)) + 1]
            c_recip = c_forward[np.where(c_backward == candidate)[0]]
            if len(np.intersect1d(c_recip, recip)) > 2 / 3 * len(c_recip):
                expansion = np.append(expansion, c_recip)
        expansion = np.unique(expansion)
        weight = np.exp(-original[i, expansion])
        v[i, expansion] = weight / np.sum(weight)
    if k2 != 1:
        v = np.stack([v[initial_rank[i, :k2]].mean(axis=0) for i in range(n)])
    temp_min = np.minimum(v[:, None, :], v[None, :, :]).sum(axis=2)
    jaccard = 1 - temp_min / (2 - temp_min)
    return jaccard * (1 - lambda_value) + original * lambda_value


@pytest.mark.parametrize(("k1", "k2", "lambda_value"), [(6, 3, 0.3), (5, 1, 0.0), (8, 4, 0.7)])
def test_k_reciprocal_equals_the_dense_reference(k1: int, k2: int, lambda_value: float) -> None:
    from embedlab.retrieval.rerank import k_reciprocal_distances

    batch = _random_batch(60, 4, 5, seed=13, split=False)
    x = batch["embeddings"]
    expected = _dense_k_reciprocal(x.double().numpy(), k1, k2, lambda_value)
    queries = torch.arange(0, 60, 3)
    candidates = torch.stack(
        [torch.cat([torch.arange(q), torch.arange(q + 1, 60)]) for q in queries.tolist()]
    )
    candidates[:, -2:] = -1  # padding stays inf
    got = k_reciprocal_distances(
        x, queries, candidates, k1=k1, k2=k2, lambda_value=lambda_value, chunk_size=16
    )
    found = candidates >= 0
    want = torch.from_numpy(expected)[queries.unsqueeze(1), candidates.clamp(min=0)]
    torch.testing.assert_close(got[found], want[found], rtol=1e-5, atol=1e-6)
    assert torch.isinf(got[~found]).all()


def test_k_reciprocal_metrics_equal_the_dense_reference() -> None:
    batch = _random_batch(60, 4, 5, seed=17, split=False)
    metric = EmbeddingMetrics(
        cmc_top_k=(1, 5),
        precision_top_k=(),
        map_top_k=(5,),
        pcf_variance=(),
        r_metrics=True,
        postprocess="k_reciprocal",
        k1=6,
        k2=3,
        lambda_value=0.3,
        rerank_top_k=60,
        chunk_size=16,
    )
    result = _compute(metric, batch)
    final = torch.from_numpy(_dense_k_reciprocal(batch["embeddings"].double().numpy(), 6, 3, 0.3))
    final.fill_diagonal_(float("inf"))  # a query is never matched with itself
    order = np.lexsort((np.broadcast_to(np.arange(60), final.shape), final.numpy()), axis=1)
    labels = batch["labels"]
    relevant = labels[torch.from_numpy(order[:, :59].copy())] == labels.unsqueeze(1)
    n_rel = relevant.sum(1)
    map_r = [
        float(
            (relevant[i, :r].double() * relevant[i, :r].cumsum(0) / torch.arange(1, r + 1)).sum()
            / r
        )
        for i, r in enumerate(n_rel.tolist())
    ]
    overall = result["OVERALL"]
    assert overall["k_reciprocal/cmc"][1] == pytest.approx(float(relevant[:, 0].double().mean()))
    assert overall["k_reciprocal/cmc"][5] == pytest.approx(
        float(relevant[:, :5].any(1).double().mean())
    )
    assert overall["k_reciprocal/map@R"] == pytest.approx(float(np.mean(map_r)))
    assert (
        overall["cmc"][1] != overall["k_reciprocal/cmc"][1]
        or overall["map@R"] != overall["k_reciprocal/map@R"]
    )  # the re-ranking changed something
