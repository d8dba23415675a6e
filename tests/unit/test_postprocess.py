"""Post-processors: AQE and k-reciprocal re-ranking against dense references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from embedlab.config import parse_params
from embedlab.errors import EmbedlabError
from embedlab.metrics import EmbeddingMetrics
from embedlab.retrieval.rerank import expand_queries
from tests.unit.metric_cases import compute_quietly, random_batch


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
    batch = random_batch(120, 5, 6, seed=11, split=split)
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
    result = compute_quietly(metric, batch)
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

    batch = random_batch(60, 4, 5, seed=13, split=False)
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
    batch = random_batch(60, 4, 5, seed=17, split=False)
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
    result = compute_quietly(metric, batch)
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
