"""Triplet miners against hand-enumerated triplets on tiny batches."""

from __future__ import annotations

import itertools

import pytest
import torch

from embedlab.errors import EmbedlabError
from embedlab.miners import (
    MINERS,
    AllTripletsMiner,
    HardTripletsMiner,
    Miner,
    PmlMiner,
    build_miner,
)

# Four points on a line: 0 and 1 are label 0, 3 and 6 are label 1.
LINE = torch.tensor([[0.0], [1.0], [3.0], [6.0]])
LINE_LABELS = torch.tensor([0, 0, 1, 1])


def as_list(triplets: tuple[torch.Tensor, ...]) -> list[tuple[int, int, int]]:
    return list(zip(*(t.tolist() for t in triplets), strict=True))


def brute_force_triplets(labels: list[int]) -> list[tuple[int, int, int]]:
    idx = range(len(labels))
    return [
        (a, p, n)
        for a, p, n in itertools.product(idx, idx, idx)
        if a != p and labels[a] == labels[p] and labels[n] != labels[a]
    ]


def test_all_triplets_exact_list_on_four_points() -> None:
    triplets = AllTripletsMiner().sample(LINE, LINE_LABELS)
    assert as_list(triplets) == [
        (0, 1, 2),
        (0, 1, 3),
        (1, 0, 2),
        (1, 0, 3),
        (2, 3, 0),
        (2, 3, 1),
        (3, 2, 0),
        (3, 2, 1),
    ]
    assert all(t.dtype == torch.long for t in triplets)


def test_all_triplets_match_brute_force_with_uneven_labels() -> None:
    labels = [2, 0, 0, 1, 0, 1, 3]
    feats = torch.randn(len(labels), 3)
    got = as_list(AllTripletsMiner().sample(feats, torch.tensor(labels)))
    # class 0: 3 anchors x 2 positives x 4 negatives, class 1: 2 x 1 x 5, classes 2, 3: none
    assert len(got) == 3 * 2 * 4 + 2 * 1 * 5
    assert got == brute_force_triplets(labels)


def test_all_triplets_cap_gives_reproducible_valid_subset() -> None:
    full = set(brute_force_triplets(LINE_LABELS.tolist()))
    miner = AllTripletsMiner(max_output_triplets=5)
    torch.manual_seed(7)
    first = as_list(miner.sample(LINE, LINE_LABELS))
    torch.manual_seed(7)
    second = as_list(miner.sample(LINE, LINE_LABELS))
    assert first == second
    assert len(first) == 5 == len(set(first))
    assert set(first) <= full
    assert first == sorted(first)


def test_all_triplets_cap_uses_given_generator() -> None:
    def draw(seed: int) -> list[tuple[int, int, int]]:
        miner = AllTripletsMiner(3, generator=torch.Generator().manual_seed(seed))
        return as_list(miner.sample(LINE, LINE_LABELS))

    assert draw(1) == draw(1)
    assert {tuple(draw(s)) for s in range(20)} != {tuple(draw(0))}


def test_all_triplets_cap_reaches_every_triplet() -> None:
    torch.manual_seed(0)
    miner = AllTripletsMiner(max_output_triplets=1)
    seen = {as_list(miner.sample(LINE, LINE_LABELS))[0] for _ in range(200)}
    assert seen == set(brute_force_triplets(LINE_LABELS.tolist()))


def test_all_triplets_cap_in_sparse_regime_is_valid_and_distinct() -> None:
    # 8 labels x 8 items: 64 anchors x 7 positives x 56 negatives = 25088 >> 8 * cap.
    labels = torch.arange(8).repeat_interleave(8)
    torch.manual_seed(3)
    a, p, n = AllTripletsMiner(max_output_triplets=100).sample(torch.randn(64, 4), labels)
    assert len(a) == 100
    assert len(set(as_list((a, p, n)))) == 100
    assert bool((labels[a] == labels[p]).all() and (a != p).all())
    assert bool((labels[a] != labels[n]).all())


@pytest.mark.parametrize("labels", [[0, 0, 0], [0, 1, 2], [5]])
def test_miners_return_empty_when_no_triplet_exists(labels: list[int]) -> None:
    feats = torch.randn(len(labels), 2)
    for miner in (AllTripletsMiner(), HardTripletsMiner()):
        triplets = miner.sample(feats, torch.tensor(labels))
        assert [t.numel() for t in triplets] == [0, 0, 0]
        assert all(t.dtype == torch.long for t in triplets)


def test_hard_triplets_exact_on_four_points() -> None:
    # anchor 0: positive 1, nearest negative 3 (d=3); anchor 2: positive 3 (d=3),
    # nearest negative 1 (d=2); anchor 3: nearest negative 1 (d=5).
    triplets = HardTripletsMiner().sample(LINE, LINE_LABELS)
    assert as_list(triplets) == [(0, 1, 2), (1, 0, 2), (2, 3, 1), (3, 2, 1)]


def test_hard_triplets_pick_farthest_positive_and_skip_anchors_without_positive() -> None:
    feats = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 4.0], [3.0, 0.0], [0.0, 2.5]])
    labels = torch.tensor([0, 0, 0, 1, 2])
    triplets = HardTripletsMiner().sample(feats.requires_grad_(), labels)
    # anchor 0: positives at distance 1 and 4 -> 2; negatives at 3 and 2.5 -> 4
    # anchor 1: positives at 1 and sqrt(17) -> 2; negatives at 2 and sqrt(7.25) -> 3
    # anchor 2: positives at 4 and sqrt(17) -> 1; negatives at 5 and 1.5 -> 4
    assert as_list(triplets) == [(0, 2, 4), (1, 2, 3), (2, 1, 4)]


def test_miner_rejects_mismatched_labels() -> None:
    with pytest.raises(EmbedlabError, match="4 feature rows but 3 labels"):
        AllTripletsMiner().sample(LINE, torch.tensor([0, 0, 1]))
    with pytest.raises(EmbedlabError, match="shape"):
        HardTripletsMiner().sample(torch.zeros(4), LINE_LABELS)


def test_all_triplets_rejects_non_positive_cap() -> None:
    with pytest.raises(EmbedlabError, match="max_output_triplets"):
        AllTripletsMiner(max_output_triplets=0)


@pytest.mark.parametrize("name", sorted(MINERS))
def test_registry_builds_every_miner(name: str) -> None:
    miner = build_miner(name)
    # pml.* miners come inside a PmlMiner: embedlab's interfaces over PML's miner
    assert isinstance(miner.miner if isinstance(miner, PmlMiner) else miner, MINERS.get(name))
    assert isinstance(miner, Miner)
    assert len(miner.sample(LINE, LINE_LABELS)[0]) > 0


def test_registry_passes_keyword_arguments() -> None:
    miner = build_miner("all", max_output_triplets=3)
    assert isinstance(miner, AllTripletsMiner)
    assert miner.max_output_triplets == 3


def test_registry_rejects_unknown_name_and_bad_arguments() -> None:
    with pytest.raises(
        EmbedlabError, match=r"train.miner.name: unknown miner 'semihard' \(did you mean 'hard'"
    ):
        build_miner("semihard")
    with pytest.raises(EmbedlabError, match="miner 'hard'"):
        build_miner("hard", max_output_triplets=3)
