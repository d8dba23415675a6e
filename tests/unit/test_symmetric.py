"""Symmetric kNN (queries are the gallery) against the general path and a naive search."""

from __future__ import annotations

import pytest
import torch

from embedlab.errors import EmbedlabError
from embedlab.retrieval import knn
from tests.unit.test_distance import integer_points, naive_knn

CHUNKS = [1, 3, 7, 16, 64, None]  # 1, 3, 7 and 16 do not divide N = 50


def _exclusions(n: int, seed: int) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.arange(n)
    sequence = torch.randint(-1, 6, (n,), generator=generator)
    return [
        {},
        {"query_ids": ids, "gallery_ids": ids},
        {
            "query_ids": ids,
            "gallery_ids": ids,
            "query_sequence": sequence,
            "gallery_sequence": sequence,
        },
    ]


@pytest.mark.parametrize("chunk_size", CHUNKS)
def test_symmetric_is_bit_identical_to_general_path_on_exact_integer_data(chunk_size) -> None:
    # Small integers: every distance is exact in float32, so any difference is a bug,
    # and ties are everywhere (the ordering contract: ties by gallery index).
    x = integer_points(50, 4, high=3, seed=0)
    for kwargs in _exclusions(50, seed=1):
        general = knn(x, x, 9, chunk_size=chunk_size, symmetric=False, **kwargs)
        symmetric = knn(x, x, 9, chunk_size=chunk_size, symmetric=True, **kwargs)
        assert torch.equal(general[0], symmetric[0])
        assert torch.equal(general[1], symmetric[1])


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("chunk_size", [5, 13, 32, 100])
def test_symmetric_equals_general_path_on_random_data_with_duplicates(metric, chunk_size) -> None:
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(101, 8, generator=generator)
    x[40] = x[3]  # exact duplicates across tiles must tie and order by index
    x[77] = x[3] * (2.0 if metric == "cosine" else 1.0)
    for kwargs in _exclusions(101, seed=3):
        general = knn(x, x, 6, metric=metric, chunk_size=chunk_size, symmetric=False, **kwargs)
        symmetric = knn(x, x, 6, metric=metric, chunk_size=chunk_size, **kwargs)
        assert torch.equal(general[1], symmetric[1])
        # Squared: the product form's round-off near 0 is ~1e-6 before the square root.
        torch.testing.assert_close(general[0] ** 2, symmetric[0] ** 2, rtol=1e-5, atol=1e-5)
    rows = knn(x, x, 4, metric=metric, chunk_size=chunk_size)[1]
    assert rows[3, :3].tolist() == [3, 40, 77]  # the tie is ordered by index


def test_symmetric_matches_naive_search_with_padding_and_exclusions() -> None:
    x = integer_points(12, 3, high=4, seed=5)
    ids = torch.arange(12)
    sequence = torch.tensor([0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, -1])
    for chunk_size in (1, 5, 12):
        dist, idx = knn(
            x,
            x,
            6,
            chunk_size=chunk_size,
            query_ids=ids,
            gallery_ids=ids,
            query_sequence=sequence,
            gallery_sequence=sequence,
        )
        naive_dist, naive_idx = naive_knn(x, x, 6, "euclidean", ids, ids, sequence, sequence)
        assert idx.tolist() == naive_idx  # rows of sequence 0 have only 3 admissible items
        torch.testing.assert_close(dist, torch.tensor(naive_dist), rtol=0, atol=1e-6)


def test_symmetric_path_is_detected_only_for_the_same_items() -> None:
    x = torch.randn(20, 4)
    with pytest.raises(EmbedlabError, match="symmetric=True"):
        knn(x, x.clone(), 3, symmetric=True)
    with pytest.raises(EmbedlabError, match="symmetric=True"):
        knn(
            x,
            x,
            3,
            symmetric=True,
            query_ids=torch.arange(20),
            gallery_ids=torch.arange(20).flip(0),
        )
    # A large sequence group falls back to dense per-tile masks with the same result.
    sequence = torch.zeros(20, dtype=torch.int64)
    sequence[:3] = 1
    a = knn(x, x, 3, chunk_size=6, query_sequence=sequence, gallery_sequence=sequence)
    b = knn(
        x, x, 3, chunk_size=6, query_sequence=sequence, gallery_sequence=sequence, symmetric=False
    )
    assert torch.equal(a[1], b[1])


def test_symmetric_dense_exclusion_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    import embedlab.retrieval.symmetric as symmetric

    monkeypatch.setattr(symmetric, "MAX_EXCLUDED_PAIRS", 10)
    x = integer_points(30, 3, high=3, seed=7)
    ids = torch.arange(30)
    sequence = torch.arange(30) % 4
    kwargs = {
        "query_ids": ids,
        "gallery_ids": ids,
        "query_sequence": sequence,
        "gallery_sequence": sequence,
    }
    a = knn(x, x, 5, chunk_size=7, **kwargs)
    b = knn(x, x, 5, chunk_size=7, symmetric=False, **kwargs)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
