"""TripletLossWithMiner against hand-computed values on four points on a line."""

from __future__ import annotations

import math

import pytest
import torch

from embedlab.errors import EmbedlabError
from embedlab.losses import TripletLossWithMiner
from embedlab.miners import AllTripletsMiner, HardTripletsMiner

LINE_LABELS = torch.tensor([0, 0, 1, 1])
# All triplets of points 0, 1, 3, 6 with labels [0, 0, 1, 1], in (a, p, n) order:
# (0,1,2) (0,1,3) (1,0,2) (1,0,3) (2,3,0) (2,3,1) (3,2,0) (3,2,1)
D_AP = [1, 1, 1, 1, 3, 3, 3, 3]
D_AN = [3, 6, 2, 5, 3, 2, 6, 5]


def line_points() -> torch.Tensor:
    return torch.tensor([[0.0], [1.0], [3.0], [6.0]], requires_grad=True)


def test_margin_loss_value_logs_and_gradient() -> None:
    criterion = TripletLossWithMiner(margin=0.1, need_logs=True)
    feats = line_points()
    loss = criterion(feats, LINE_LABELS)
    # Only (2,3,0): 3 - 3 + 0.1 and (2,3,1): 3 - 2 + 0.1 are active -> 1.2 / 8
    assert loss.item() == pytest.approx(0.15)
    assert criterion.last_logs == pytest.approx(
        {"pos_dist": 2.0, "neg_dist": 4.0, "active_tri": 0.25, "n_triplets": 8.0}
    )
    loss.backward()
    # d/dx of [(x3 - x2) - (x2 - x0)] + [(x3 - x2) - (x2 - x1)], divided by 8
    assert feats.grad is not None
    assert feats.grad.flatten().tolist() == pytest.approx([0.125, 0.125, -0.5, 0.25])


def test_soft_margin_loss_value() -> None:
    criterion = TripletLossWithMiner(margin=None, need_logs=True)
    loss = criterion(line_points(), LINE_LABELS)
    expected = sum(math.log1p(math.exp(ap - an)) for ap, an in zip(D_AP, D_AN, strict=True)) / 8
    assert loss.item() == pytest.approx(expected)
    assert criterion.last_logs["active_tri"] == 1.0
    assert criterion.last_logs["pos_dist"] == pytest.approx(2.0)


def test_reductions() -> None:
    feats = line_points()
    summed = TripletLossWithMiner(margin=0.1, reduction="sum")(feats, LINE_LABELS)
    assert summed.item() == pytest.approx(1.2)
    per_triplet = TripletLossWithMiner(margin=0.1, reduction="none")(feats, LINE_LABELS)
    assert per_triplet.tolist() == pytest.approx([0, 0, 0, 0, 0.1, 1.1, 0, 0])
    nonzero = TripletLossWithMiner(margin=0.1, reduction="mean_nonzero")(feats, LINE_LABELS)
    assert nonzero.item() == pytest.approx(1.2 / 2)  # the two active triplets only
    separated = torch.tensor([[0.0], [0.1], [5.0], [5.1]], requires_grad=True)
    inactive = TripletLossWithMiner(margin=0.1, reduction="mean_nonzero")(separated, LINE_LABELS)
    assert inactive.item() == 0.0  # no active triplet: 0, not 0/0
    inactive.backward()
    assert torch.equal(separated.grad, torch.zeros(4, 1))


def test_hard_miner_loss_and_logs() -> None:
    criterion = TripletLossWithMiner(margin=0.1, miner=HardTripletsMiner(), need_logs=True)
    loss = criterion(line_points(), LINE_LABELS)
    # hard triplets (0,1,2) (1,0,2) (2,3,1) (3,2,1): only 3 - 2 + 0.1 is active
    assert loss.item() == pytest.approx(1.1 / 4)
    assert criterion.last_logs == pytest.approx(
        {"pos_dist": 2.0, "neg_dist": 3.0, "active_tri": 0.25, "n_triplets": 4.0}
    )


@pytest.mark.parametrize("reduction", ["mean", "mean_nonzero", "sum", "none"])
def test_batch_without_triplets_gives_connected_zero(reduction: str) -> None:
    criterion = TripletLossWithMiner(reduction=reduction, need_logs=True)  # type: ignore[arg-type]
    feats = torch.randn(3, 4, requires_grad=True)
    loss = criterion(feats, torch.tensor([1, 1, 1]))
    assert loss.grad_fn is not None
    assert loss.shape == ((0,) if reduction == "none" else ())
    assert loss.sum().item() == 0.0
    loss.sum().backward()
    assert feats.grad is not None
    assert torch.equal(feats.grad, torch.zeros(3, 4))
    assert criterion.last_logs == {
        "pos_dist": 0.0,
        "neg_dist": 0.0,
        "active_tri": 0.0,
        "n_triplets": 0.0,
    }


def test_no_triplet_loss_is_zero_even_with_non_finite_features() -> None:
    feats = torch.tensor([[float("inf")], [float("nan")]], requires_grad=True)
    assert TripletLossWithMiner()(feats, torch.tensor([0, 1])).item() == 0.0


def test_duplicate_items_give_finite_gradients() -> None:
    # Repeated items (BalanceSampler repeats small labels) have d_ap == 0 exactly.
    feats = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.5, 0.0], [0.5, 0.0]], requires_grad=True)
    loss = TripletLossWithMiner(margin=1.0)(feats, LINE_LABELS)
    loss.backward()
    assert loss.item() == pytest.approx(0.5)
    assert feats.grad is not None
    assert bool(torch.isfinite(feats.grad).all())


def test_logs_are_not_computed_unless_asked() -> None:
    criterion = TripletLossWithMiner()
    criterion(line_points(), LINE_LABELS)
    assert criterion.last_logs == {}


def test_defaults_match_the_seed() -> None:
    criterion = TripletLossWithMiner()
    assert criterion.margin == 0.1
    assert isinstance(criterion.miner, AllTripletsMiner)
    assert criterion.reduction == "mean"


def test_bad_arguments_are_one_line_errors() -> None:
    with pytest.raises(EmbedlabError, match="margin must be >= 0"):
        TripletLossWithMiner(margin=-0.5)
    with pytest.raises(EmbedlabError, match="must be one of mean, mean_nonzero, sum, none"):
        TripletLossWithMiner(reduction="max")  # type: ignore[arg-type]
