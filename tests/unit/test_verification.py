"""FNMR@FMR (metrics/verification.py): OML's hand values and a brute-force reference."""

from __future__ import annotations

import pytest
import torch

from embedlab.metrics import EmbeddingMetrics
from embedlab.metrics.verification import calc_fnmr_at_fmr, calc_fnmr_at_fmr_chunked
from tests.unit.metric_cases import compute_quietly, random_batch


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
    batch = random_batch(150, 6, 5, seed=7, split=split)
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
    result = compute_quietly(metric_obj, batch)
    assert result["OVERALL"]["fnmr@fmr"][0.1] == pytest.approx(expected[0.1], abs=2 / 150**2)


# ---------------------------------------------------------------- AQE
