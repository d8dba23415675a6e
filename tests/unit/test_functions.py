"""Pure metric functions against hand-computed values and naive per-query loops."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from embedlab.errors import EmbedlabError
from embedlab.metrics import (
    OVERALL,
    calc_cmc,
    calc_map,
    calc_pcf,
    calc_precision,
    calc_retrieval_metrics,
    count_relevant,
    factorize,
    group_unreduced_metrics,
    reduce_metrics,
)


def rel(*rows: list[int]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.bool)


# ---------------------------------------------------------------- per-query definitions


def test_cmc_hand_values_and_k_beyond_width() -> None:
    out = calc_cmc(rel([0, 0, 1], [1, 0, 0], [0, 0, 0]), top_k=(1, 2, 3, 50))
    assert out[1].tolist() == [0, 1, 0]
    assert out[2].tolist() == [0, 1, 0]
    assert out[3].tolist() == [1, 1, 0]
    assert out[50].tolist() == [1, 1, 0]


def test_precision_divides_by_min_k_and_n_relevant() -> None:
    # n=3, g=[1,1,1,0,0]: the OML docstring example, precision@5 = 3/3 (not 3/5).
    out = calc_precision(rel([1, 1, 1, 0, 0]), torch.tensor([3]), top_k=(1, 4, 5, 10))
    assert [out[k].item() for k in (1, 4, 5, 10)] == [1.0, 1.0, 1.0, 1.0]
    out = calc_precision(rel([0, 1, 0, 1, 0]), torch.tensor([10]), top_k=(2, 5, 8))
    assert out[2].item() == pytest.approx(1 / 2)
    assert out[5].item() == pytest.approx(2 / 5)
    assert out[8].item() == pytest.approx(2 / 8)  # only 5 retrieved: hits stay 2


def test_map_is_mean_precision_over_hits_as_in_oml() -> None:
    # OML's calc_map doctest: [1,0],[0,1],[0,0,0,0] with n_gt=[1,1,2] -> @1 [1,0,0], @2 [1,.5,0].
    is_rel = rel([1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0])
    out = calc_map(is_rel, top_k=(1, 2))
    assert out[1].tolist() == [1.0, 0.0, 0.0]
    assert out[2].tolist() == [1.0, 0.5, 0.0]
    # hits at 1, 3, 4: (1/1 + 2/3 + 3/4) / 3
    out = calc_map(rel([1, 0, 1, 1, 0]), top_k=(5, 3))
    assert out[5].item() == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)
    assert out[3].item() == pytest.approx((1 + 2 / 3) / 2)


def test_queries_without_relevant_items_give_zero_not_nan() -> None:
    out = calc_retrieval_metrics(rel([0, 0]), torch.tensor([0]), (1,), (1,), (2,))
    values = [v.item() for group in out.values() for v in group.values()]
    assert values == [0.0, 0.0, 0.0]


def test_zero_width_relevance_is_handled() -> None:
    out = calc_retrieval_metrics(
        torch.zeros(2, 0, dtype=torch.bool), torch.tensor([1, 0]), (1,), (1,), (1,)
    )
    assert out["cmc"][1].tolist() == [0.0, 0.0]
    assert out["map"][1].tolist() == [0.0, 0.0]


@pytest.mark.parametrize("bad", [(0,), (1.5,), (-1,), (True,)])
def test_top_k_must_be_positive_integers(bad: tuple) -> None:
    with pytest.raises(EmbedlabError, match="cmc_top_k"):
        calc_cmc(rel([1]), bad)


def naive_query_metrics(flags: list[bool], n_rel: int, k: int) -> tuple[float, float, float]:
    top = flags[:k]
    cmc = float(any(top))
    precision = sum(top) / min(k, n_rel) if n_rel else 0.0
    hits, precisions = 0, []
    for i, flag in enumerate(top, start=1):
        if flag:
            hits += 1
            precisions.append(hits / i)
    ap = sum(precisions) / len(precisions) if precisions else 0.0
    return cmc, precision, ap


def test_retrieval_metrics_match_naive_loop_on_random_relevance() -> None:
    rng = random.Random(0)
    n_queries, width = 200, 8
    flags = [[rng.random() < 0.3 for _ in range(width)] for _ in range(n_queries)]
    n_rel = [sum(f) + rng.randint(0, 4) for f in flags]
    out = calc_retrieval_metrics(
        rel(*flags), torch.tensor(n_rel), (1, 3, 12), (2, 8, 12), (1, 5, 12)
    )
    for q in range(n_queries):
        for k in (1, 3, 12):
            assert out["cmc"][k][q].item() == naive_query_metrics(flags[q], n_rel[q], k)[0]
        for k in (2, 8, 12):
            expected = naive_query_metrics(flags[q], n_rel[q], k)[1]
            assert out["precision"][k][q].item() == pytest.approx(expected)
        for k in (1, 5, 12):
            expected = naive_query_metrics(flags[q], n_rel[q], k)[2]
            assert out["map"][k][q].item() == pytest.approx(expected)


# ---------------------------------------------------------------- count_relevant


def test_count_relevant_matches_naive_loop() -> None:
    rng = random.Random(1)
    n_items = 120
    labels = [rng.randint(0, 9) for _ in range(n_items)]
    sequence = [rng.choice([-1, -1, 0, 1, 2, 3]) for _ in range(n_items)]
    queries = [i for i in range(n_items) if rng.random() < 0.6]
    gallery = [i for i in range(n_items) if rng.random() < 0.7]
    t = torch.tensor
    got = count_relevant(
        t(labels)[queries],
        t(labels)[gallery],
        t(queries),
        t(gallery),
        t(sequence)[queries],
        t(sequence)[gallery],
    )
    expected = [
        sum(
            1
            for g in gallery
            if labels[g] == labels[q]
            and g != q
            and not (sequence[q] >= 0 and sequence[g] == sequence[q])
        )
        for q in queries
    ]
    assert got.tolist() == expected


def test_count_relevant_without_ids_or_sequences_counts_labels() -> None:
    got = count_relevant(torch.tensor([1, 2, 3]), torch.tensor([1, 1, 2, 5]))
    assert got.tolist() == [2, 1, 0]


# ---------------------------------------------------------------- pcf


def test_pcf_hand_example_from_oml() -> None:
    assert calc_pcf(torch.eye(4, 10), (0.5, 1.0)) == {0.5: 0.2, 1.0: 0.5}


def test_pcf_matches_explained_variance_ratio_of_an_svd() -> None:
    generator = torch.Generator().manual_seed(0)
    scales = torch.tensor([10.0, 5.0, 3.0, 1.0, 0.5, 0.1])
    x = torch.randn(500, 6, generator=generator) * scales
    ratio = torch.linalg.svdvals((x - x.mean(0)).double()) ** 2
    cumulative = (ratio / ratio.sum()).cumsum(0).tolist()
    for r in (0.1, 0.5, 0.8, 0.95, 0.999):
        expected = (sum(1 for c in cumulative if c <= r) + 1) / 6
        assert calc_pcf(x, (r,))[r] == pytest.approx(expected)


def test_pcf_leaves_the_callers_thread_count_alone() -> None:
    # The eigen-solve runs on one thread (MKL spins under load); the caller's setting returns.
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        calc_pcf(torch.randn(50, 8), (0.5,))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


def test_pcf_of_degenerate_embeddings_is_empty_not_nan() -> None:
    assert calc_pcf(torch.ones(5, 3), (0.5,)) == {}
    assert calc_pcf(torch.zeros(1, 3), (0.5,)) == {}


def test_pcf_rejects_shares_outside_unit_interval() -> None:
    with pytest.raises(EmbedlabError, match="pcf_variance"):
        calc_pcf(torch.eye(3), (1.5,))


# ---------------------------------------------------------------- reduction


def test_reduce_metrics_groups_by_category_and_skips_invalid_queries() -> None:
    unreduced = {
        "cmc": {1: torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0])},
        "map": {5: torch.tensor([0.5, 0.25, 1.0, 0.0, 0.0])},
    }
    valid = torch.tensor([True, True, True, False, False])
    out = reduce_metrics(unreduced, ["shoes", "bags", "shoes", "bags", "hats"], valid)
    assert list(out) == [OVERALL, "bags", "hats", "shoes"]
    assert out[OVERALL]["cmc"][1] == pytest.approx(2 / 3)
    assert out[OVERALL]["map"][5] == pytest.approx(1.75 / 3)
    assert (out[OVERALL]["n_queries"], out[OVERALL]["n_queries_no_relevant"]) == (3, 2)
    assert out["shoes"]["cmc"][1] == 1.0 and out["shoes"]["map"][5] == 0.75
    assert out["bags"] == {
        "cmc": {1: 0.0},
        "map": {5: 0.25},
        "n_queries": 1,
        "n_queries_no_relevant": 1,
    }
    assert out["hats"] == {"cmc": {}, "map": {}, "n_queries": 0, "n_queries_no_relevant": 1}
    assert all(isinstance(v, float) for group in out.values() for v in group["cmc"].values())


def test_reduce_metrics_without_categories_or_with_empty_names_reports_overall_only() -> None:
    unreduced = {"cmc": {1: torch.tensor([1.0, 0.0])}}
    valid = torch.tensor([True, True])
    assert list(reduce_metrics(unreduced, None, valid)) == [OVERALL]
    out = reduce_metrics(unreduced, ["", "a"], valid)
    assert list(out) == [OVERALL, "a"]
    assert out[OVERALL]["cmc"][1] == 0.5 and out["a"]["cmc"][1] == 0.0


def test_reduce_metrics_matches_naive_per_category_loop() -> None:
    rng = random.Random(2)
    n = 300
    values = torch.tensor([rng.random() for _ in range(n)])
    cats = [rng.choice(["a", "b", "c", "d"]) for _ in range(n)]
    valid = torch.tensor([rng.random() < 0.8 for _ in range(n)])
    out = reduce_metrics({"map": {5: values}}, cats, valid)
    grouped = group_unreduced_metrics({"map": {5: values}}, cats, valid)
    for cat in "abcd":
        members = [i for i in range(n) if cats[i] == cat and valid[i]]
        expected = sum(values[i].item() for i in members) / len(members)
        assert out[cat]["map"][5] == pytest.approx(expected)
        assert out[cat]["n_queries"] == len(members)
        assert grouped[cat]["map"][5].tolist() == [values[i].item() for i in members]
    assert not any(math.isnan(g["map"][5]) for g in out.values())


def test_factorize_treats_values_as_text() -> None:
    codes, names = factorize(torch.tensor([3, 1, 3]))
    assert names == ["1", "3"] and codes.tolist() == [1, 0, 1]
    codes, names = factorize(np.array(["x"]))
    assert names == ["x"] and codes.tolist() == [0]
