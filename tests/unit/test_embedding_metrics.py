"""EmbeddingMetrics: hand-computed tiny cases, arrival-order invariance and a naive cross-check."""

from __future__ import annotations

import math
import random
import warnings
from typing import Any

import pytest
import torch

from embedlab.errors import EmbedlabError
from embedlab.metrics import OVERALL, EmbeddingMetrics

# position: x, label, is_query, is_gallery, category
TINY = [
    (0.0, 0, True, True, "a"),
    (1.0, 0, True, True, "a"),
    (2.0, 1, True, True, "b"),
    (4.0, 0, False, True, "a"),
    (10.0, 1, True, True, "b"),
    (7.0, 2, True, True, "b"),  # the only item of label 2: no relevant gallery item
]


def tiny_batch(rows: list[int] | None = None, **extra: list[Any]) -> dict[str, Any]:
    rows = list(range(len(TINY))) if rows is None else rows
    batch: dict[str, Any] = {
        "embeddings": torch.tensor([[TINY[i][0]] for i in rows]),
        "labels": torch.tensor([TINY[i][1] for i in rows]),
        "is_query": torch.tensor([TINY[i][2] for i in rows]),
        "is_gallery": torch.tensor([TINY[i][3] for i in rows]),
        "categories": [TINY[i][4] for i in rows],
        "idx": torch.tensor(rows),
    }
    for key, values in extra.items():
        batch[key] = [values[i] for i in rows]
    return batch


def compute(metric: EmbeddingMetrics, *batches: dict[str, Any]) -> dict:
    metric.setup(num_samples=None)
    for batch in batches:
        metric.update_data(batch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return metric.compute_metrics()


def small_metric(**kwargs: Any) -> EmbeddingMetrics:
    defaults: dict[str, Any] = {"cmc_top_k": (1, 2), "precision_top_k": (2,), "map_top_k": (2,)}
    return EmbeddingMetrics(**{**defaults, **kwargs})


def test_hand_computed_metrics_overall_and_per_category() -> None:
    metric = small_metric()
    out = compute(metric, tiny_batch())
    # queries 0..5 except 3; query 5 has no relevant item.
    # q0 -> [1 rel, 2]; q1 -> [0 rel, 2] (tie at 1: index order); q2 -> [1, 0]; q4 -> [5, 3]
    assert metric.results.query_positions.tolist() == [0, 1, 2, 4, 5]
    assert metric.results.retrieved.tolist() == [[1, 2], [0, 2], [1, 0], [5, 3], [3, 4]]
    assert metric.results.relevance[:4].tolist() == [
        [True, False],
        [True, False],
        [False, False],
        [False, False],
    ]
    assert metric.results.n_relevant.tolist() == [2, 2, 1, 1, 0]
    assert metric.results.valid_queries.tolist() == [True, True, True, True, False]
    assert out[OVERALL] == {
        "cmc": {1: 0.5, 2: 0.5},
        "precision": {2: 0.25},
        "map": {2: 0.5},
        "pcf": {0.5: 1.0},
        "n_queries": 4,
        "n_queries_no_relevant": 1,
    }
    assert out["a"]["cmc"] == {1: 1.0, 2: 1.0}
    assert out["a"]["precision"] == {2: 0.5} and out["a"]["map"] == {2: 1.0}
    assert (out["a"]["n_queries"], out["a"]["n_queries_no_relevant"]) == (2, 0)
    assert out["b"]["cmc"] == {1: 0.0, 2: 0.0}
    assert (out["b"]["n_queries"], out["b"]["n_queries_no_relevant"]) == (2, 1)
    assert metric.metrics is out
    unreduced = metric.metrics_unreduced
    assert unreduced[OVERALL]["map"][2].tolist() == [1.0, 1.0, 0.0, 0.0]
    assert unreduced["a"]["precision"][2].tolist() == [0.5, 0.5]
    assert unreduced["b"]["cmc"][1].tolist() == [0.0, 0.0]


def test_results_are_plain_python_numbers() -> None:
    out = compute(small_metric(), tiny_batch())
    for group in out.values():
        for name in ("cmc", "precision", "map", "pcf"):
            for k, v in group[name].items():
                assert type(v) is float and isinstance(k, (int, float))
        assert type(group["n_queries"]) is int and type(group["n_queries_no_relevant"]) is int


def test_query_without_relevant_item_warns_with_the_count() -> None:
    metric = small_metric().setup(6)
    metric.update_data(tiny_batch())
    with pytest.warns(UserWarning, match="1 of 5 queries have no relevant gallery item"):
        metric.compute_metrics()


def test_a_query_never_retrieves_itself() -> None:
    metric = small_metric(cmc_top_k=(10,))
    compute(metric, tiny_batch())
    for number, position in enumerate(metric.results.query_positions.tolist()):
        assert position not in metric.results.retrieved[number].tolist()


def test_k_larger_than_gallery_uses_what_exists() -> None:
    metric = small_metric(cmc_top_k=(1, 10), precision_top_k=(10,), map_top_k=(10,))
    out = compute(metric, tiny_batch())
    assert metric.results.retrieved.shape == (5, 10)
    assert metric.results.retrieved[0, 5:].tolist() == [-1] * 5  # 5 admissible gallery items
    assert math.isinf(metric.results.distances[0, 5])
    # q2 (label 1) finds item 4 at rank 5: cmc@10 = 1, precision = 1/min(10, 1) = 1, map = 1/5.
    assert metric.metrics_unreduced[OVERALL]["cmc"][10].tolist() == [1.0, 1.0, 1.0, 1.0]
    assert metric.metrics_unreduced[OVERALL]["map"][10][2].item() == pytest.approx(1 / 5)
    assert out[OVERALL]["precision"][10] == 1.0


def test_same_sequence_items_are_neither_retrieved_nor_counted() -> None:
    sequences = ["s1", "s1", "", "", "", ""]
    metric = small_metric(sequence_key="sequence")
    compute(metric, tiny_batch(sequence=sequences))
    # q0 may not see item 1: [2, 3], relevant only at rank 2, n_relevant = 1 (item 3).
    assert metric.results.retrieved[0].tolist() == [2, 3]
    assert metric.results.relevance[0].tolist() == [False, True]
    assert metric.results.n_relevant[:2].tolist() == [1, 1]
    unreduced = metric.metrics_unreduced[OVERALL]
    assert (unreduced["cmc"][1][0].item(), unreduced["cmc"][2][0].item()) == (0.0, 1.0)
    assert unreduced["precision"][2][0].item() == 1.0
    assert unreduced["map"][2][0].item() == 0.5


def test_permuted_and_duplicated_arrival_gives_identical_results() -> None:
    reference = small_metric(extra_keys=("paths",))
    paths = [f"img/{i}.png" for i in range(6)]
    expected = compute(reference, tiny_batch(paths=paths))

    shuffled = small_metric(extra_keys=("paths",))
    # DDP-style: two "ranks" in reverse order, padded with duplicates of rows 0 and 5.
    got = compute(
        shuffled, tiny_batch([5, 3, 1, 5], paths=paths), tiny_batch([4, 2, 0, 0], paths=paths)
    )
    assert got == expected
    assert torch.equal(shuffled.results.retrieved, reference.results.retrieved)
    assert torch.equal(shuffled.results.distances, reference.results.distances)
    assert shuffled.extra["paths"] == paths
    assert shuffled.query_gallery.row_ids.tolist() == list(range(6))


def test_num_samples_mismatch_warns() -> None:
    metric = small_metric().setup(num_samples=99)
    metric.update_data(tiny_batch([0, 1, 2, 3, 4]))  # every query has a relevant item
    with pytest.warns(UserWarning, match="expected 99 samples, got 5"):
        metric.compute_metrics()


def test_setup_forgets_previous_data() -> None:
    metric = small_metric()
    compute(metric, tiny_batch())
    compute(metric, tiny_batch([0, 1, 3]))
    assert metric.query_gallery.embeddings.shape == (3, 1)


def test_defaults_without_query_gallery_flags_treat_every_item_as_both() -> None:
    metric = EmbeddingMetrics(cmc_top_k=(1,), precision_top_k=(), map_top_k=(), pcf_variance=())
    batch = {"embeddings": torch.tensor([[0.0], [1.0], [5.0], [6.0]]), "labels": [0, 0, 1, 1]}
    out = compute(metric, batch)
    assert out == {
        OVERALL: {
            "cmc": {1: 1.0},
            "precision": {},
            "map": {},
            "pcf": {},
            "n_queries": 4,
            "n_queries_no_relevant": 0,
        }
    }


def test_cosine_distance() -> None:
    metric = small_metric(distance="cosine", cmc_top_k=(1,))
    batch = {
        "embeddings": torch.tensor([[1.0, 0.0], [2.0, 0.1], [0.0, 1.0], [0.1, 3.0]]),
        "labels": torch.tensor([0, 0, 1, 1]),
    }
    out = compute(metric, batch)
    assert out[OVERALL]["cmc"][1] == 1.0
    assert metric.results.distances[0, 0].item() == pytest.approx(
        1 - 2 / math.hypot(2, 0.1), abs=1e-6
    )


def test_relevant_gallery_lists_admissible_ground_truths_nearest_first() -> None:
    metric = small_metric()
    compute(metric, tiny_batch())
    positions, distances = metric.relevant_gallery(0)
    assert positions.tolist() == [1, 3] and distances.tolist() == [1.0, 4.0]
    with pytest.raises(EmbedlabError, match="out of range"):
        metric.relevant_gallery(5)


@pytest.mark.parametrize(
    ("batches", "match"),
    [
        ([{"labels": [0]}], "'embeddings'"),
        ([{"embeddings": torch.zeros(2, 2)}], "'labels'"),
        ([{"embeddings": torch.zeros(2, 2), "labels": [0]}], "'labels' has 1 entries, expected 2"),
        ([{"embeddings": torch.zeros(2), "labels": [0, 1]}], r"\[batch, dim\]"),
        (
            [
                {"embeddings": torch.zeros(1, 2), "labels": [0], "categories": ["a"]},
                {"embeddings": torch.zeros(1, 2), "labels": [0]},
            ],
            "'categories' is present in 1 of 2 batches",
        ),
        (
            [{"embeddings": torch.zeros(2, 2), "labels": [0, 0], "is_query": [False, False]}],
            "no query items",
        ),
        ([{"embeddings": torch.zeros(2, 2), "labels": [0.5, 1.0]}], "'labels' must be"),
        ([], "no data"),
    ],
)
def test_bad_input_raises_one_line_errors(batches: list[dict], match: str) -> None:
    metric = small_metric().setup()
    with pytest.raises(EmbedlabError, match=match):
        for batch in batches:
            metric.update_data(batch)
        metric.compute_metrics()


def test_bad_configuration_raises() -> None:
    with pytest.raises(EmbedlabError, match="distance"):
        EmbeddingMetrics(distance="hamming")
    with pytest.raises(EmbedlabError, match="map_top_k"):
        EmbeddingMetrics(map_top_k=(0,))


# ---------------------------------------------------------------- naive cross-check


def naive_metrics(
    points: list[list[float]],
    labels: list[int],
    is_query: list[bool],
    is_gallery: list[bool],
    categories: list[str],
    sequence: list[int],
    top_k: dict[str, tuple[int, ...]],
) -> dict[str, dict]:
    """One query at a time: sort admissible gallery by (float64 distance, position)."""
    per_query: list[tuple[str, dict[tuple[str, int], float]]] = []
    no_relevant: dict[str, int] = {}
    for q in range(len(points)):
        if not is_query[q]:
            continue
        admissible = [
            g
            for g in range(len(points))
            if is_gallery[g] and g != q and not (sequence[q] >= 0 and sequence[g] == sequence[q])
        ]
        admissible.sort(key=lambda g: (math.dist(points[q], points[g]), g))
        flags = [labels[g] == labels[q] for g in admissible]
        n_rel = sum(flags)
        if n_rel == 0:
            no_relevant[categories[q]] = no_relevant.get(categories[q], 0) + 1
            continue
        values = {}
        for k in top_k["cmc"]:
            values["cmc", k] = float(any(flags[:k]))
        for k in top_k["precision"]:
            values["precision", k] = sum(flags[:k]) / min(k, n_rel)
        for k in top_k["map"]:
            hits, total = 0, 0.0
            for i, flag in enumerate(flags[:k], start=1):
                if flag:
                    hits += 1
                    total += hits / i
            values["map", k] = total / hits if hits else 0.0
        per_query.append((categories[q], values))
    out: dict[str, dict] = {}
    for group in [OVERALL, *sorted({c for c, _ in per_query} | set(no_relevant))]:
        members = [v for c, v in per_query if group in (OVERALL, c)]
        report: dict[str, Any] = {name: {} for name in top_k}
        for name, ks in top_k.items():
            for k in ks:
                if members:
                    report[name][k] = sum(m[name, k] for m in members) / len(members)
        report["n_queries"] = len(members)
        report["n_queries_no_relevant"] = (
            sum(no_relevant.values()) if group == OVERALL else no_relevant.get(group, 0)
        )
        out[group] = report
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_naive_per_query_loop_on_random_data_with_ties(seed: int) -> None:
    rng = random.Random(seed)
    n_items = 90
    points = [[float(rng.randint(0, 3)), float(rng.randint(0, 3))] for _ in range(n_items)]
    labels = [rng.randint(0, 11) for _ in range(n_items)]
    is_query = [rng.random() < 0.7 for _ in range(n_items)]
    is_gallery = [rng.random() < 0.8 for _ in range(n_items)]
    categories = [rng.choice(["x", "y", "z"]) for _ in range(n_items)]
    sequence = [rng.choice([-1, -1, -1, 0, 1, 2]) for _ in range(n_items)]
    top_k = {"cmc": (1, 3, 100), "precision": (2, 5), "map": (1, 4, 10)}
    metric = EmbeddingMetrics(
        cmc_top_k=top_k["cmc"],
        precision_top_k=top_k["precision"],
        map_top_k=top_k["map"],
        pcf_variance=(),
        chunk_size=7,
    )
    order = list(range(n_items))
    rng.shuffle(order)
    batches = [order[i : i + 16] for i in range(0, n_items, 16)]
    for rows in batches:
        metric.update_data(
            {
                "embeddings": torch.tensor([points[i] for i in rows]),
                "labels": torch.tensor([labels[i] for i in rows]),
                "is_query": torch.tensor([is_query[i] for i in rows]),
                "is_gallery": torch.tensor([is_gallery[i] for i in rows]),
                "categories": [categories[i] for i in rows],
                "sequence": torch.tensor([sequence[i] for i in rows]),
                "idx": torch.tensor(rows),
            }
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = metric.compute_metrics()
    expected = naive_metrics(points, labels, is_query, is_gallery, categories, sequence, top_k)
    assert list(got) == list(expected)
    for group, report in expected.items():
        for name in top_k:
            assert got[group][name] == pytest.approx(report[name], abs=1e-6), (group, name)
        assert got[group]["n_queries"] == report["n_queries"]
        assert got[group]["n_queries_no_relevant"] == report["n_queries_no_relevant"]
