"""pairwise_dist and the exact chunked knn: hand-computed cases and naive cross-checks."""

from __future__ import annotations

import math

import pytest
import torch

from embedlab.errors import EmbedlabError
from embedlab.retrieval import auto_chunk_size, knn, pairwise_dist


def naive_knn(
    queries: torch.Tensor,
    gallery: torch.Tensor,
    k: int,
    metric: str = "euclidean",
    query_ids: torch.Tensor | None = None,
    gallery_ids: torch.Tensor | None = None,
    query_sequence: torch.Tensor | None = None,
    gallery_sequence: torch.Tensor | None = None,
) -> tuple[list[list[float]], list[list[int]]]:
    """One query at a time in float64, sorted by (distance, gallery index)."""
    q64, g64 = queries.double(), gallery.double()
    all_dist, all_idx = [], []
    for i in range(len(q64)):
        candidates = []
        for j in range(len(g64)):
            if query_ids is not None and int(query_ids[i]) == int(gallery_ids[j]):
                continue
            if query_sequence is not None:
                s = int(query_sequence[i])
                if s >= 0 and s == int(gallery_sequence[j]):
                    continue
            if metric == "euclidean":
                d = float(torch.linalg.vector_norm(q64[i] - g64[j]))
            else:
                d = 1.0 - float(torch.nn.functional.cosine_similarity(q64[i], g64[j], dim=0))
            candidates.append((d, j))
        candidates.sort()
        top = candidates[:k] + [(math.inf, -1)] * max(0, k - len(candidates))
        all_dist.append([d for d, _ in top])
        all_idx.append([j for _, j in top])
    return all_dist, all_idx


def integer_points(n: int, dim: int, high: int, seed: int) -> torch.Tensor:
    """Small-integer embeddings: float32 arithmetic is exact, and ties are frequent."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, high, (n, dim), generator=generator).float()


# ---------------------------------------------------------------- pairwise_dist


def test_pairwise_dist_hand_values() -> None:
    a = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    b = torch.tensor([[0.0, 4.0]])
    assert pairwise_dist(a, b).tolist() == [[4.0], [3.0]]


def test_pairwise_dist_matches_cdist() -> None:
    generator = torch.Generator().manual_seed(0)
    x1 = torch.randn(37, 16, generator=generator)
    x2 = torch.randn(53, 16, generator=generator)
    torch.testing.assert_close(pairwise_dist(x1, x2), torch.cdist(x1, x2), atol=1e-5, rtol=0)


def test_pairwise_dist_is_never_negative_or_nan_and_has_finite_gradient_at_zero() -> None:
    x = torch.tensor([[1.0, 2.0], [1.0, 2.0], [1e3, -1e3]], requires_grad=True)
    dist = pairwise_dist(x, x)
    assert (dist >= 0).all()
    assert dist[0, 1] == 0
    dist.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_pairwise_dist_exact_and_paired_match_cdist_and_vector_norm() -> None:
    torch.manual_seed(1)
    x1, x2 = torch.randn(7, 5), torch.randn(9, 5)
    exact = pairwise_dist(x1, x2, exact=True)
    torch.testing.assert_close(exact, torch.cdist(x1, x2), atol=1e-6, rtol=0)
    torch.testing.assert_close(
        pairwise_dist(x1, x2, squared=True), exact.square(), atol=1e-4, rtol=0
    )
    paired = pairwise_dist(x1, x1.flip(0), paired=True)
    assert torch.equal(paired, torch.linalg.vector_norm(x1 - x1.flip(0), dim=1))


def test_pairwise_dist_cosine_forms_agree() -> None:
    torch.manual_seed(2)
    x1, x2 = torch.randn(4, 3), torch.randn(6, 3)
    expected = (
        1 - torch.nn.functional.normalize(x1, dim=1) @ torch.nn.functional.normalize(x2, dim=1).T
    )
    torch.testing.assert_close(pairwise_dist(x1, x2, "cosine"), expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(
        pairwise_dist(x1, x2, "cosine", exact=True), expected, atol=1e-6, rtol=0
    )


def test_pairwise_dist_rejects_mismatched_dims() -> None:
    with pytest.raises(EmbedlabError, match="pairwise_dist"):
        pairwise_dist(torch.zeros(2, 3), torch.zeros(2, 4))


# ---------------------------------------------------------------- knn: hand-computed


def test_knn_excludes_self_and_orders_ties_by_gallery_index() -> None:
    gallery = torch.tensor([[0.0], [2.0], [2.0], [4.0]])
    # Query 0 is gallery item 1 itself; items 0 and 2 are both at distance 2 -> 0 before 2.
    queries = torch.tensor([[2.0], [3.0]])
    dist, idx = knn(
        queries, gallery, k=3, query_ids=torch.tensor([1, 7]), gallery_ids=torch.arange(4)
    )
    assert idx.tolist() == [[2, 0, 3], [1, 2, 3]]
    assert dist.tolist() == [[0.0, 2.0, 2.0], [1.0, 1.0, 1.0]]


def test_knn_tie_at_the_top_k_boundary_keeps_the_smallest_indices() -> None:
    gallery = torch.tensor([[5.0], [1.0], [1.0], [1.0], [1.0], [0.0]])
    for chunk_size in (1, 2, None):
        _, idx = knn(torch.tensor([[0.0]]), gallery, k=3, chunk_size=chunk_size)
        assert idx.tolist() == [[5, 1, 2]]


def test_knn_excludes_same_sequence_but_not_missing_sequence() -> None:
    gallery = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    dist, idx = knn(
        torch.tensor([[0.0], [0.0]]),
        gallery,
        k=4,
        query_sequence=torch.tensor([7, -1]),
        gallery_sequence=torch.tensor([7, 7, -1, -1]),
    )
    assert idx.tolist() == [[2, 3, -1, -1], [0, 1, 2, 3]]
    assert dist[0].tolist() == [2.0, 3.0, math.inf, math.inf]


def test_knn_pads_when_k_exceeds_the_gallery() -> None:
    dist, idx = knn(torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 4.0]]), k=3)
    assert idx.tolist() == [[0, -1, -1]]
    assert dist.tolist() == [[5.0, math.inf, math.inf]]
    assert dist.dtype == torch.float32 and idx.dtype == torch.int64


def test_knn_with_every_item_excluded_is_all_padding() -> None:
    dist, idx = knn(
        torch.zeros(2, 2),
        torch.zeros(1, 2),
        k=2,
        query_ids=torch.tensor([0, 0]),
        gallery_ids=torch.tensor([0]),
    )
    assert idx.tolist() == [[-1, -1], [-1, -1]]
    assert torch.isinf(dist).all()


def test_knn_cosine_distance_is_one_minus_cosine() -> None:
    gallery = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]])
    dist, idx = knn(torch.tensor([[2.0, 0.0]]), gallery, k=3, metric="cosine")
    assert idx.tolist() == [[0, 1, 2]]
    torch.testing.assert_close(dist, torch.tensor([[0.0, 1.0, 2.0]]))


def test_knn_empty_inputs_give_padding() -> None:
    dist, idx = knn(torch.zeros(2, 3), torch.zeros(0, 3), k=2)
    assert idx.tolist() == [[-1, -1], [-1, -1]]
    assert torch.isinf(dist).all()
    assert knn(torch.zeros(0, 3), torch.zeros(4, 3), k=2)[1].shape == (0, 2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k": 0}, "k must be"),
        ({"k": 1, "metric": "manhattan"}, "metric must be"),
        ({"k": 1, "chunk_size": 0}, "chunk_size"),
        ({"k": 1, "query_ids": torch.tensor([0])}, "both"),
        ({"k": 1, "query_ids": torch.tensor([0, 1]), "gallery_ids": torch.tensor([0])}, "shapes"),
    ],
)
def test_knn_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(EmbedlabError, match=match):
        knn(torch.zeros(1, 2), torch.zeros(2, 2), **kwargs)


def test_auto_chunk_size_fits_the_budget() -> None:
    rows = auto_chunk_size(100_000, budget_bytes=256 * 2**20)
    assert rows * 100_000 * 4 <= 256 * 2**20 < (rows + 1) * 100_000 * 4


# ---------------------------------------------------------------- knn: cross-checks


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_knn_matches_naive_loop_with_ties_ids_and_sequences(metric: str) -> None:
    points = integer_points(60, 3, high=3, seed=1)  # many exact duplicates
    generator = torch.Generator().manual_seed(2)
    sequence = torch.randint(-1, 6, (60,), generator=generator)
    queries, gallery = points[:40], points[15:]
    query_ids, gallery_ids = torch.arange(40), torch.arange(15, 60)
    kwargs = {
        "query_ids": query_ids,
        "gallery_ids": gallery_ids,
        "query_sequence": sequence[:40],
        "gallery_sequence": sequence[15:],
    }
    dist, idx = knn(queries, gallery, k=7, metric=metric, chunk_size=6, **kwargs)
    ref_dist, ref_idx = naive_knn(queries, gallery, 7, metric, **kwargs)
    if metric == "euclidean":
        assert idx.tolist() == ref_idx  # exact arithmetic: identical ranking incl. ties
    torch.testing.assert_close(dist, torch.tensor(ref_dist, dtype=torch.float32), atol=1e-5, rtol=0)


def test_knn_matches_naive_loop_on_random_floats() -> None:
    generator = torch.Generator().manual_seed(3)
    queries = torch.randn(30, 8, generator=generator)
    gallery = torch.randn(50, 8, generator=generator)
    dist, idx = knn(queries, gallery, k=5)
    ref_dist, ref_idx = naive_knn(queries, gallery, 5)
    assert idx.tolist() == ref_idx
    torch.testing.assert_close(dist, torch.tensor(ref_dist, dtype=torch.float32), atol=1e-5, rtol=0)


@pytest.mark.parametrize("chunk_size", [1, 2, 7, 25, 40, 1000])
def test_chunked_knn_equals_unchunked(chunk_size: int) -> None:
    points = integer_points(40, 4, high=3, seed=4)
    sequence = torch.arange(40) // 5
    kwargs = {
        "query_ids": torch.arange(40),
        "gallery_ids": torch.arange(40),
        "query_sequence": sequence,
        "gallery_sequence": sequence,
    }
    whole = knn(points, points, k=9, chunk_size=40, **kwargs)
    chunked = knn(points, points, k=9, chunk_size=chunk_size, **kwargs)
    assert torch.equal(whole[1], chunked[1])
    assert torch.equal(whole[0], chunked[0])


def test_large_sequence_groups_take_the_dense_exclusion_path() -> None:
    points = integer_points(30, 2, high=4, seed=5)
    sequence = torch.zeros(30, dtype=torch.int64)
    sequence[:3] = -1  # only these three are admissible for anyone
    kwargs = {"query_sequence": sequence, "gallery_sequence": sequence}
    dist, idx = knn(points, points, k=4, chunk_size=30, **kwargs)
    ref_dist, ref_idx = naive_knn(points, points, 4, **kwargs)
    assert idx.tolist() == ref_idx
    torch.testing.assert_close(dist, torch.tensor(ref_dist, dtype=torch.float32))
