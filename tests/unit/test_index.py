"""ExactIndex and FaissIndex against brute-force pairwise_dist + sort."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from embedlab.errors import EmbedlabError
from embedlab.retrieval import knn, pairwise_dist
from embedlab.retrieval.index import ExactIndex, FaissIndex, load_index


def brute_force(
    queries: np.ndarray, gallery: np.ndarray, k: int, metric: str = "euclidean"
) -> tuple[np.ndarray, np.ndarray]:
    """All distances with pairwise_dist, sorted by (distance, gallery position); inf/-1 padding."""
    q, g = torch.from_numpy(queries), torch.from_numpy(gallery)
    if metric == "euclidean":
        dist = pairwise_dist(q, g)
    else:
        dist = (
            1 - torch.nn.functional.normalize(q, dim=1) @ torch.nn.functional.normalize(g, dim=1).T
        )
    dist = dist.numpy()
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    d = np.take_along_axis(dist, order, axis=1)
    pad = k - order.shape[1]
    if pad > 0:
        d = np.pad(d, ((0, 0), (0, pad)), constant_values=np.inf)
        order = np.pad(order, ((0, 0), (0, pad)), constant_values=-1)
    return d, order


def integer_points(n: int, dim: int, high: int, seed: int) -> np.ndarray:
    """Small-integer vectors: float32 distances are exact and ties are frequent."""
    return np.random.default_rng(seed).integers(0, high, (n, dim)).astype(np.float32)


def tie_free(n: int, dim: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def min_gap(distances: np.ndarray) -> float:
    return float(np.diff(np.sort(distances, axis=1), axis=1).min())


@pytest.mark.parametrize("chunk_size", [1, 4, None])
def test_exact_equals_brute_force_with_ties(chunk_size: int | None) -> None:
    gallery, queries = integer_points(60, 3, 3, seed=0), integer_points(9, 3, 3, seed=1)
    for k in (1, 5, 60, 70):
        d, p = ExactIndex(gallery, chunk_size=chunk_size).search(queries, k)
        expected_d, expected_p = brute_force(queries, gallery, k)
        assert np.array_equal(p, expected_p), (k, chunk_size)
        assert np.array_equal(d, expected_d)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_exact_equals_knn_exactly(metric: str) -> None:
    """Same arithmetic and tie order as the chunked knn it is built on, bit for bit."""
    for gallery, queries in (
        (integer_points(80, 4, 3, seed=12), integer_points(11, 4, 3, seed=13)),
        (tie_free(300, 16, seed=14), tie_free(7, 16, seed=15)),
    ):
        d, p = ExactIndex(gallery, metric=metric, chunk_size=3).search(queries, 12)
        expected_d, expected_p = knn(
            torch.from_numpy(queries), torch.from_numpy(gallery), 12, metric=metric, chunk_size=3
        )
        assert np.array_equal(p, expected_p.numpy())
        assert np.array_equal(d, expected_d.numpy())


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_exact_equals_brute_force_on_floats(metric: str) -> None:
    gallery, queries = tie_free(500, 24, seed=2), tie_free(13, 24, seed=3)
    d, p = ExactIndex(gallery, metric=metric).search(queries, 10)
    expected_d, expected_p = brute_force(queries, gallery, 10, metric)
    assert np.array_equal(p, expected_p)
    np.testing.assert_allclose(d, expected_d, atol=1e-5)
    assert d.dtype == np.float32 and p.dtype == np.int64


def test_allowed_restricts_to_a_subset_with_original_positions() -> None:
    gallery, queries = integer_points(50, 2, 4, seed=4), integer_points(6, 2, 4, seed=5)
    allowed = np.array([3, 4, 10, 11, 12, 30, 49])
    d, p = ExactIndex(gallery, chunk_size=2).search(queries, 9, allowed=allowed[::-1])
    sub_d, sub_p = brute_force(queries, gallery[allowed], 9)
    assert np.array_equal(p, np.where(sub_p < 0, -1, allowed[np.maximum(sub_p, 0)]))
    assert np.array_equal(d, sub_d)
    assert (p[:, 7:] == -1).all() and np.isinf(d[:, 7:]).all()


def test_single_vector_query_and_empty_gallery() -> None:
    index = ExactIndex(np.array([[0.0, 0.0], [3.0, 4.0]], dtype=np.float32))
    d, p = index.search(torch.tensor([3.0, 4.0]), 2)
    assert p.tolist() == [[1, 0]] and d.tolist() == [[0.0, 5.0]]
    d, p = ExactIndex(np.empty((0, 2), np.float32)).search(np.zeros((1, 2)), 2)
    assert p.tolist() == [[-1, -1]] and np.isinf(d).all()


def test_bad_inputs_are_one_line_errors() -> None:
    index = ExactIndex(np.zeros((3, 4), np.float32))
    with pytest.raises(EmbedlabError, match="expected dimension 4, got 3"):
        index.search(np.zeros((1, 3)), 1)
    with pytest.raises(EmbedlabError, match="k must be >= 1"):
        index.search(np.zeros((1, 4)), 0)
    with pytest.raises(EmbedlabError, match=r"allowed positions must lie in \[0, 3\)"):
        index.search(np.zeros((1, 4)), 1, allowed=[3])
    with pytest.raises(EmbedlabError, match="metric must be one of"):
        ExactIndex(np.zeros((3, 4)), metric="manhattan")  # type: ignore[arg-type]


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_faiss_flat_equals_exact_without_ties(metric: str) -> None:
    gallery, queries = tie_free(400, 16, seed=6), tie_free(20, 16, seed=7)
    exact_d, exact_p = ExactIndex(gallery, metric=metric).search(queries, 8)
    assert min_gap(brute_force(queries, gallery, 9, metric)[0]) > 1e-5  # no near-ties
    faiss_d, faiss_p = FaissIndex(gallery, metric=metric).search(queries, 8)
    assert np.array_equal(faiss_p, exact_p)
    np.testing.assert_allclose(faiss_d, exact_d, atol=1e-4)
    allowed = np.arange(0, 400, 7)
    assert np.array_equal(
        FaissIndex(gallery, metric=metric).search(queries, 8, allowed=allowed)[1],
        ExactIndex(gallery, metric=metric).search(queries, 8, allowed=allowed)[1],
    )


def test_faiss_pads_like_exact_and_ivf_with_all_lists_is_exact() -> None:
    gallery, queries = tie_free(300, 8, seed=8), tie_free(5, 8, seed=9)
    d, p = FaissIndex(gallery[:3]).search(queries, 5)
    assert (p[:, 3:] == -1).all() and np.isinf(d[:, 3:]).all()
    ivf = FaissIndex(gallery, factory="IVF4,Flat", nprobe=4)  # every list visited: exhaustive
    assert np.array_equal(ivf.search(queries, 6)[1], ExactIndex(gallery).search(queries, 6)[1])


def test_faiss_bad_factory_is_a_params_error() -> None:
    with pytest.raises(EmbedlabError, match=r"embed.faiss_factory: 'NoSuchIndex' is not"):
        FaissIndex(np.zeros((4, 2), np.float32), factory="NoSuchIndex")


@pytest.mark.parametrize("kind", ["exact", "faiss"])
def test_save_and_load_round_trip(tmp_path: Path, kind: str) -> None:
    gallery, queries = tie_free(100, 8, seed=10), tie_free(4, 8, seed=11)
    cls = ExactIndex if kind == "exact" else FaissIndex
    index = cls(gallery, metric="cosine")
    path = index.save(tmp_path / f"index.{kind}")
    loaded = load_index(path)
    assert type(loaded) is cls and loaded.metric == "cosine" and loaded.ntotal == 100
    assert loaded.dim == 8
    for a, b in zip(index.search(queries, 5), loaded.search(queries, 5), strict=True):
        assert np.array_equal(a, b)


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(EmbedlabError, match=r"nope.npy.json: index sidecar not found"):
        load_index(tmp_path / "nope.npy")
    path = ExactIndex(np.eye(2)).save(tmp_path / "g.npy")
    with pytest.raises(EmbedlabError, match=r"g.npy.json: holds a 'exact' index, not 'faiss'"):
        FaissIndex.load(path)


def test_faiss_index_still_searches_after_faiss_torch_utils_is_imported() -> None:
    pytest.importorskip("faiss")
    import faiss.contrib.torch_utils  # noqa: F401  (patches faiss.Index.search globally)

    from embedlab.retrieval.index import FaissIndex

    index = FaissIndex(np.arange(4, dtype=np.float32)[:, None], metric="euclidean")
    queries = np.array([[0.9], [2.6]], dtype=np.float32)
    assert index.search(queries, 1)[1][:, 0].tolist() == [1, 3]
    assert index.search(queries, 1, allowed=[0, 2])[1][:, 0].tolist() == [0, 2]
