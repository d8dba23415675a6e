"""``PmlMiner``: a PML miner's output, and PML's own conversions to pairs and triplets."""

from __future__ import annotations

import pytest
import torch
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu

from embedlab.miners import PmlMiner
from embedlab.miners.pairs import all_pairs


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(12, 5, generator=gen), torch.arange(3).repeat_interleave(4)


def _lists(tensors: tuple[torch.Tensor, ...]) -> list[list[int]]:
    return [t.tolist() for t in tensors]


@pytest.mark.parametrize(
    "make", [pml_miners.BatchHardMiner, lambda: pml_miners.TripletMarginMiner(margin=0.5)]
)
def test_a_triplet_miner_gives_its_triplets_and_their_pairs(make) -> None:
    x, labels = _batch()
    theirs = make()(x, labels)
    miner = PmlMiner(make())
    assert _lists(miner.indices(x, labels)) == _lists(theirs)
    assert _lists(miner.sample(x, labels)) == _lists(theirs)
    assert _lists(miner.mine(x, labels)) == _lists(lmu.convert_to_pairs(theirs, labels))


@pytest.mark.parametrize(
    "make",
    [
        lambda: pml_miners.MultiSimilarityMiner(epsilon=0.5),
        lambda: pml_miners.PairMarginMiner(pos_margin=0.5, neg_margin=1.5),
    ],
)
def test_a_pair_miner_gives_its_pairs_and_their_triplets(make) -> None:
    x, labels = _batch(1)
    theirs = make()(x, labels)
    miner = PmlMiner(make())
    assert len(theirs[0]) and len(theirs[2])  # the case has pairs of both kinds
    assert _lists(miner.mine(x, labels)) == _lists(theirs)
    expected = lmu.convert_to_triplets(theirs, labels, t_per_anchor="all")
    assert _lists(miner.sample(x, labels)) == _lists(expected)


def test_a_pml_miner_mines_a_reference_set() -> None:
    x, labels = _batch(2)
    ref, ref_labels = _batch(3)
    miner = PmlMiner(pml_miners.MultiSimilarityMiner(epsilon=10.0))  # keeps every pair
    assert _pair_sets(miner.mine(x, labels, ref, ref_labels)) == _pair_sets(
        all_pairs(labels, ref_labels)
    )


def _pair_sets(pairs: tuple[torch.Tensor, ...]) -> tuple[set, set]:
    a1, p, a2, n = (t.tolist() for t in pairs)
    return set(zip(a1, p, strict=True)), set(zip(a2, n, strict=True))


def test_statistics_of_the_last_call_are_its_logs() -> None:
    miner = PmlMiner(pml_miners.TripletMarginMiner(margin=0.5, collect_stats=True))
    assert miner.last_logs == {}
    x, labels = _batch()
    anchors, _, _ = miner.sample(x, labels)
    assert miner.last_logs["num_triplets"] == float(len(anchors))
    assert set(miner.last_logs) >= {"pos_pair_dist", "neg_pair_dist", "avg_triplet_margin"}
