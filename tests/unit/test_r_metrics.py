"""map@R and r_precision: hand values and equality with pytorch-metric-learning."""

from __future__ import annotations

import pytest
import torch

from embedlab.errors import EmbedlabError
from embedlab.metrics import EmbeddingMetrics, calc_r_metrics
from tests.unit.metric_cases import compute_quietly, random_batch


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
    result = compute_quietly(metric, {"embeddings": x, "labels": labels})
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

    batch = random_batch(240, 8, 12, seed=4, split=split)
    metric = EmbeddingMetrics(
        cmc_top_k=(1,),
        precision_top_k=(),
        map_top_k=(5,),
        pcf_variance=(),
        r_metrics=True,
        chunk_size=37,
    )
    result = compute_quietly(metric, batch)
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
    result = compute_quietly(metric, {"embeddings": x, "labels": labels})
    assert result["OVERALL"]["n_queries"] == 150
    assert result["OVERALL"]["map@R"] == pytest.approx(1.0)
    assert result["OVERALL"]["r_precision"] == pytest.approx(1.0)


# ---------------------------------------------------------------- FNMR@FMR
