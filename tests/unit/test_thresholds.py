"""Verification thresholds: the choice rule against a brute force (ties included), the
chunked selection against the explicit one, and ``thresholds.json``'s checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from embedlab.errors import EmbedlabError
from embedlab.metrics.verification import (
    choose_thresholds,
    choose_thresholds_chunked,
    rates_at_threshold_chunked,
    threshold_rank,
)
from embedlab.models.thresholds import Threshold, Thresholds, parse_threshold, read_thresholds
from embedlab.retrieval import pairwise_dist

RATES = (0.0, 0.001, 0.01, 0.07, 0.1, 0.29, 1 / 3, 0.5, 0.999, 1.0)


def brute_force_threshold(neg: np.ndarray, rate: float) -> float:
    """The largest candidate t with share(neg < t) <= rate, by trying every candidate.

    FMR(t) only changes at a negative distance, so the supremum of the allowed thresholds
    is a negative distance or +inf (every negative allowed)."""
    candidates = [*np.unique(neg).tolist(), np.inf]
    allowed = [c for c in candidates if (neg < c).sum() <= rate * len(neg) + 1e-9 * len(neg)]
    return max(allowed)


@pytest.mark.parametrize("seed", range(6))
def test_choice_equals_brute_force_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_neg = int(rng.integers(1, 300))
    # integer distances: most values tie with others
    neg = rng.integers(0, 12, n_neg).astype(np.float32)
    pos = rng.integers(0, 12, int(rng.integers(1, 50))).astype(np.float32)
    chosen = choose_thresholds(torch.from_numpy(pos), torch.from_numpy(neg), RATES)
    assert [c.fmr_target for c in chosen] == list(RATES)
    for c in chosen:
        expected = brute_force_threshold(neg, c.fmr_target)
        if np.isinf(expected):  # every negative may match: just above the largest
            assert c.threshold > neg.max() and np.float32(c.threshold) == c.threshold
        else:
            assert c.threshold == expected
        assert c.fmr == pytest.approx((neg < c.threshold).mean(), abs=0)
        assert c.fnmr == pytest.approx((pos >= c.threshold).mean(), abs=0)
        assert c.fmr <= c.fmr_target


def test_ties_at_the_threshold_stay_non_matches() -> None:
    # 10 negatives, 4 of them tied at 2.0: at f = 0.2 two may match, but t = 2 lets only
    # the one below it match; any t above 2 would let five match.
    neg = torch.tensor([1.0, 2, 2, 2, 2, 3, 4, 5, 6, 7])
    pos = torch.tensor([0.5, 1.0, 2.0, 3.0])
    (chosen,) = choose_thresholds(pos, neg, (0.2,))
    assert (chosen.threshold, chosen.fmr, chosen.fnmr) == (2.0, 0.1, 0.5)


def test_rank_reads_the_rate_as_written() -> None:
    # 0.29 * 100 is 28.999999999999996 in binary floats; 29 negatives are allowed
    assert threshold_rank(0.29, 100) == 29
    assert threshold_rank(0.001, 1000) == 1 and threshold_rank(0.001, 999) == 0


def explicit_pairs(x: torch.Tensor, labels: torch.Tensor, seq: torch.Tensor, q, g, metric: str):
    dist = pairwise_dist(x[q], x[g], metric).clamp_min(0.0) + 0.0  # as the chunked pass
    admissible = q.unsqueeze(1) != g.unsqueeze(0)
    sq, sg = seq[q].unsqueeze(1), seq[g].unsqueeze(0)
    admissible &= ~((sq == sg) & (sq >= 0))
    same = labels[q].unsqueeze(1) == labels[g].unsqueeze(0)
    return dist[admissible & same], dist[admissible & ~same]


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_chunked_choice_equals_explicit_with_ties(metric: str) -> None:
    gen = torch.Generator().manual_seed(3)
    # small integer coordinates: many pairs share a distance, exactly in float32
    x = torch.randint(-2, 3, (120, 4), generator=gen).float()
    labels = torch.randint(0, 5, (120,), generator=gen)
    seq = torch.randint(-1, 15, (120,), generator=gen)
    q, g = torch.arange(0, 100), torch.arange(30, 120)
    pos, neg = explicit_pairs(x, labels, seq, q, g, metric)
    expected = choose_thresholds(pos, neg, RATES)
    for chunk_size in (7, 64, None):
        choice = choose_thresholds_chunked(
            x[q], x[g], labels[q], labels[g], RATES, metric=metric, chunk_size=chunk_size,
            query_ids=q, gallery_ids=g, query_sequence=seq[q], gallery_sequence=seq[g],
        )  # fmt: skip
        assert (choice.n_positive, choice.n_negative) == (len(pos), len(neg))
        if metric == "euclidean":  # integer arithmetic: bit-identical distances
            assert list(choice.entries) == expected
        else:  # normalising rounds differently per chunk: equal up to float32 noise
            for got, want in zip(choice.entries, expected, strict=True):
                assert got.threshold == pytest.approx(want.threshold, abs=1e-6)
                assert got.fmr <= got.fmr_target
        # applying a chosen threshold to the same pairs gives what the choice reported
        middle = choice.entries[RATES.index(0.1)]
        rates = rates_at_threshold_chunked(
            x[q], x[g], labels[q], labels[g], middle.threshold, metric=metric,
            chunk_size=chunk_size, query_ids=q, gallery_ids=g, query_sequence=seq[q],
            gallery_sequence=seq[g],
        )  # fmt: skip
        assert (rates["fmr"], rates["fnmr"]) == (middle.fmr, middle.fnmr)


def test_no_negative_pair_gives_no_threshold() -> None:
    x = torch.tensor([[0.0], [1.0]])
    labels, ids = torch.tensor([0, 0]), torch.arange(2)
    choice = choose_thresholds_chunked(x, x, labels, labels, (0.1,), query_ids=ids, gallery_ids=ids)
    assert choice.entries == () and (choice.n_positive, choice.n_negative) == (2, 0)
    with pytest.raises(EmbedlabError, match="2 positive and 0 negative pairs"):
        rates_at_threshold_chunked(x, x, labels, labels, 1.0, query_ids=ids, gallery_ids=ids)


# ---------------------------------------------------------------- thresholds.json
CHOSEN = Thresholds(
    "euclidean",
    "abc",
    40,
    360,
    (Threshold(0.001, 0.5, 0.0, 0.6), Threshold(0.01, 0.75, 0.0083, 0.2)),
)


def test_file_round_trip_and_lookup(tmp_path: Path) -> None:
    CHOSEN.write(tmp_path / "thresholds.json")
    data = json.loads((tmp_path / "thresholds.json").read_text())
    assert data["rule"] == "match when distance < threshold"
    assert data["thresholds"][1] == {
        "fmr_target": 0.01,
        "threshold": 0.75,
        "fmr": 0.0083,
        "fnmr": 0.2,
    }
    back = read_thresholds(tmp_path / "thresholds.json")
    assert back == CHOSEN and back.lookup(0.001) == 0.5 and back.lookup(1e-3) == 0.5


def test_unknown_rate_lists_the_available_ones() -> None:
    with pytest.raises(EmbedlabError) as info:
        CHOSEN.lookup(0.05)
    assert str(info.value) == "no threshold chosen at fmr=0.05; available: fmr=0.001, fmr=0.01"
    empty = Thresholds("euclidean", "abc", 0, 0, ())
    with pytest.raises(EmbedlabError, match=r"no thresholds were chosen \(set validate.fnmr_fmr"):
        empty.lookup(0.01, "reports/thresholds.json")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "not valid JSON"),
        ('{"metric": "euclidean"}', "missing keys extractor_sha256, n_positive, n_negative"),
        (
            '{"metric": "e", "extractor_sha256": "", "n_positive": 1, "n_negative": 1, '
            '"thresholds": [{"fmr_target": 0.1}]}',
            "thresholds\\[0\\] needs numbers fmr_target, threshold, fmr, fnmr",
        ),
    ],
)
def test_broken_files_are_one_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "thresholds.json"
    path.write_text(content)
    with pytest.raises(EmbedlabError, match=message) as info:
        read_thresholds(path)
    assert "\n" not in str(info.value)


def test_thresholds_of_other_weights_or_distance_are_refused() -> None:
    CHOSEN.check_belongs_to("abc", "euclidean", "t.json")
    with pytest.raises(EmbedlabError, match=r"t\.json: chosen for other weights"):
        CHOSEN.check_belongs_to("abd", "euclidean", "t.json")
    with pytest.raises(EmbedlabError, match="chosen with euclidean distances, these are cosine"):
        CHOSEN.check_belongs_to("abc", "cosine", "t.json")


@pytest.mark.parametrize("text", ["fmr=", "fmr=1.5", "far=0.1", "-1", "nan", "0.8x"])
def test_bad_threshold_values_are_refused(text: str) -> None:
    with pytest.raises(EmbedlabError, match="--threshold: expected a distance"):
        parse_threshold(text)
