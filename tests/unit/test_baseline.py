"""The raw-pixel baseline against a kNN computed here by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from embedlab.metrics import MetricOptions
from embedlab.metrics.baseline import raw_pixel_matrix, raw_pixel_table
from embedlab.retrieval import QueryGallery

VALUES = [0, 20, 30, 100, 130, 250]
LABELS = [0, 0, 1, 1, 2, 2]


def _grey(values: list[int], size: tuple[int, int] = (3, 2)) -> list[Image.Image]:
    # stored as RGB, as load_image returns them: the baseline must see one grey channel
    return [Image.new("L", size, v).convert("RGB") for v in values]


def _items(labels: list[int]) -> QueryGallery:
    """The model's query/gallery value: its embeddings are what the baseline replaces."""
    n = len(labels)
    return QueryGallery.from_columns(torch.randn(n, 4), labels, categories=["c"] * n)


def _by_hand(pixels: np.ndarray, labels: np.ndarray, k: int) -> dict[str, float]:
    """Brute-force kNN (a query never retrieves itself) and OML's cmc/precision/map."""
    cmc1, cmck, prec, ap = [], [], [], []
    for q in range(len(pixels)):
        others = [g for g in range(len(pixels)) if g != q]
        dist = [float(np.sqrt(((pixels[q] - pixels[g]) ** 2).sum())) for g in others]
        ranked = [others[i] for i in np.argsort(dist, kind="stable")][:k]
        rel = [labels[g] == labels[q] for g in ranked]
        n_rel = sum(labels[g] == labels[q] for g in others)
        cmc1.append(float(rel[0]))
        cmck.append(float(any(rel)))
        prec.append(sum(rel) / min(k, n_rel))
        hits = [sum(rel[: i + 1]) / (i + 1) for i in range(k) if rel[i]]
        ap.append(sum(hits) / len(hits) if hits else 0.0)
    return {"cmc1": np.mean(cmc1), "cmck": np.mean(cmck), "prec": np.mean(prec), "map": np.mean(ap)}


def test_raw_pixels_score_like_a_kNN_computed_by_hand() -> None:
    images = _grey(VALUES)
    options = MetricOptions(cmc_top_k=(1, 2), precision_top_k=(2,), map_top_k=(2,))
    result = raw_pixel_table(_items(LABELS), images.__getitem__, options).metrics["OVERALL"]
    # nearest neighbours: 0->20 (same label), 20->30, 30->20, 100->130, 130->100 (all
    # wrong), 250->130 (same): cmc@1 = 2/6
    assert result["cmc"][1] == pytest.approx(1 / 3)
    pixels = np.array([[v / 255.0] * 6 for v in VALUES])
    expected = _by_hand(pixels, np.array(LABELS), k=2)
    assert result["cmc"][1] == pytest.approx(expected["cmc1"])
    assert result["cmc"][2] == pytest.approx(expected["cmck"])
    assert result["precision"][2] == pytest.approx(expected["prec"])
    assert result["map"][2] == pytest.approx(expected["map"])


def test_random_colour_images_match_the_hand_kNN_on_every_pixel() -> None:
    rng = np.random.default_rng(0)
    arrays = rng.integers(0, 256, size=(12, 4, 5, 3), dtype=np.uint8)
    labels = rng.integers(0, 3, size=12).tolist()
    images = [Image.fromarray(a, mode="RGB") for a in arrays]
    options = MetricOptions(cmc_top_k=(1, 3), precision_top_k=(3,), map_top_k=(3,))
    result = raw_pixel_table(_items(labels), images.__getitem__, options).metrics["OVERALL"]
    pixels = arrays.astype(np.float64).reshape(12, -1) / 255.0  # all three channels count
    expected = _by_hand(pixels, np.array(labels), k=3)
    assert result["cmc"][1] == pytest.approx(expected["cmc1"])
    assert result["cmc"][3] == pytest.approx(expected["cmck"])
    assert result["precision"][3] == pytest.approx(expected["prec"])
    assert result["map"][3] == pytest.approx(expected["map"])


def test_native_resolution_unless_sizes_differ_or_exceed_max_side() -> None:
    rows, shape = raw_pixel_matrix(_grey([0, 255], size=(28, 28)))
    assert rows.shape == (2, 784) and shape == (1, 28, 28)
    rows, shape = raw_pixel_matrix(_grey([0, 9], size=(100, 80)), max_side=16)
    assert shape == (1, 16, 16)
    mixed = [*_grey([3], size=(10, 10)), *_grey([3], size=(12, 8))]
    assert raw_pixel_matrix(mixed, max_side=8)[1] == (1, 8, 8)
