"""The pair and class-weight losses against values computed by hand on 2-4 embeddings.

Four unit vectors on the circle at 0, 60, 90 and 180 degrees, labels [0, 0, 1, 1]:
cosines s01 = 1/2, s02 = 0, s03 = -1, s12 = cos 30, s13 = -1/2, s23 = 0, and Euclidean
distances d = 2 sin(angle / 2).
"""

from __future__ import annotations

import math

import pytest
import torch

from embedlab.errors import EmbedlabError
from embedlab.losses import (
    ArcFaceLoss,
    ContrastiveLoss,
    MultiSimilarityLoss,
    ProxyAnchorLoss,
    SubCenterArcFaceLoss,
    SupConLoss,
)
from embedlab.miners import MultiSimilarityMiner

ANGLES = [0.0, 60.0, 90.0, 180.0]
LABELS = torch.tensor([0, 0, 1, 1])
C30 = math.cos(math.radians(30))
SIM = {(0, 1): 0.5, (0, 2): 0.0, (0, 3): -1.0, (1, 2): C30, (1, 3): -0.5, (2, 3): 0.0}


def sim(i: int, j: int) -> float:
    return SIM[(min(i, j), max(i, j))]


def circle(angles: list[float] = ANGLES, scale: float = 1.0) -> torch.Tensor:
    rad = torch.tensor(angles, dtype=torch.float64).deg2rad()
    return (scale * torch.stack([rad.cos(), rad.sin()], dim=1)).requires_grad_(True)


def test_contrastive_value_and_logs_by_hand() -> None:
    criterion = ContrastiveLoss(pos_margin=0.5, neg_margin=1.0)
    loss = criterion(circle(scale=3.0), LABELS)  # it normalises: the scale does not matter
    # positives at d = 1 (0-1) and sqrt 2 (2-3), each counted both ways, all above 0.5
    pos = (2 * (1 - 0.5) + 2 * (math.sqrt(2) - 0.5)) / 4
    # only 1-2 (d = 2 sin 15 deg) is within the negative margin
    neg = 1 - 2 * math.sin(math.radians(15))
    assert loss.item() == pytest.approx(pos + neg, abs=1e-12)
    logs = criterion.last_logs
    assert logs["n_pos_pairs"] == 4 and logs["n_neg_pairs"] == 8
    assert logs["active_pos"] == 1.0 and logs["active_neg"] == pytest.approx(2 / 8)
    assert logs["pos_dist"] == pytest.approx((2 + 2 * math.sqrt(2)) / 4)


def test_contrastive_gradient_pulls_positives_together() -> None:
    x = circle([0.0, 90.0, 45.0])
    ContrastiveLoss()(x, torch.tensor([0, 0, 1])).backward()
    # d/dx0 of |x0 - x1| on the sphere points from x1 towards x0 (tangentially): descent
    # moves x0 towards x1, i.e. upwards.
    assert x.grad[0, 1] < 0


def test_multi_similarity_value_by_hand() -> None:
    alpha, beta, base = 2.0, 50.0, 0.5
    positives = {0: [1], 1: [0], 2: [3], 3: [2]}
    negatives = {0: [2, 3], 1: [2, 3], 2: [0, 1], 3: [0, 1]}
    per_anchor = [
        math.log(1 + sum(math.exp(-alpha * (sim(a, p) - base)) for p in positives[a])) / alpha
        + math.log(1 + sum(math.exp(beta * (sim(a, n) - base)) for n in negatives[a])) / beta
        for a in range(4)
    ]
    loss = MultiSimilarityLoss(alpha, beta, base)(circle(), LABELS)
    assert loss.item() == pytest.approx(sum(per_anchor) / 4, abs=1e-12)


def test_supcon_value_by_hand() -> None:
    temperature = 0.5
    per_anchor = []
    for a in range(4):
        others = [j for j in range(4) if j != a]
        log_denominator = math.log(sum(math.exp(sim(a, j) / temperature) for j in others))
        (p,) = [j for j in others if LABELS[j] == LABELS[a]]
        per_anchor.append(-(sim(a, p) / temperature - log_denominator))
    criterion = SupConLoss(temperature=temperature)
    assert criterion(circle(), LABELS).item() == pytest.approx(sum(per_anchor) / 4, abs=1e-12)
    assert criterion.last_logs["active"] == 1.0


def test_pair_losses_without_pairs_give_a_connected_zero() -> None:
    x = circle([0.0])
    for criterion in (ContrastiveLoss(), MultiSimilarityLoss(), SupConLoss()):
        loss = criterion(x, torch.tensor([0]))  # a single item: no pair at all
        loss.backward()
        assert loss.item() == 0.0 and criterion.last_logs["n_pos_pairs"] == 0.0
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_supcon_needs_positives_and_negatives() -> None:
    criterion = SupConLoss()
    loss = criterion(circle(), torch.zeros(4, dtype=torch.long))  # one label: no negative
    assert loss.item() == 0.0 and criterion.last_logs["active"] == 0.0


def test_multi_similarity_miner_by_hand() -> None:
    a1, p, a2, n = MultiSimilarityMiner(epsilon=0.1).mine(circle().detach(), LABELS)
    # anchor 0: its positive (s 0.5) is more similar than every negative + 0.1: dropped
    # anchor 1: keeps positive 0 (0.4 < 0.87) and negative 2 (0.97 > 0.5)
    # anchor 2: positive 3 (-0.1 < 0.87), negatives 0 and 1 (> 0); anchor 3: nothing
    assert list(zip(a1.tolist(), p.tolist(), strict=True)) == [(1, 0), (2, 3)]
    assert list(zip(a2.tolist(), n.tolist(), strict=True)) == [(1, 2), (2, 0), (2, 1)]


def test_arcface_value_by_hand_including_the_monotonic_branch() -> None:
    margin, scale = 20.0, 2.0
    criterion = ArcFaceLoss(num_classes=2, embedding_size=2, margin=margin, scale=scale)
    with torch.no_grad():
        criterion.W.copy_(torch.eye(2, dtype=criterion.W.dtype))
    criterion = criterion.double()
    x = circle([30.0, 170.0])
    loss = criterion(x, torch.tensor([0, 0]))
    m = math.radians(margin)
    # item 0: 30 deg from class 0 -> cos(50 deg); 60 deg from class 1
    ce0 = -math.log(
        math.exp(scale * math.cos(math.radians(50)))
        / (math.exp(scale * math.cos(math.radians(50))) + math.exp(scale * 0.5))
    )
    # item 1: 170 deg > 180 - 20 from class 0 -> cos(170) - m sin m; 80 deg from class 1
    target = math.cos(math.radians(170)) - m * math.sin(m)
    other = math.cos(math.radians(80))
    ce1 = -math.log(math.exp(scale * target) / (math.exp(scale * target) + math.exp(scale * other)))
    assert loss.item() == pytest.approx((ce0 + ce1) / 2, abs=1e-12)
    assert criterion.last_logs["avg_angle"] == pytest.approx(100.0)
    assert criterion.last_logs["accuracy"] == 0.5


def test_subcenter_arcface_uses_the_best_sub_center_of_each_class() -> None:
    sub = SubCenterArcFaceLoss(
        num_classes=2, embedding_size=2, margin=10.0, scale=4.0, sub_centers=2
    )
    plain = ArcFaceLoss(num_classes=2, embedding_size=2, margin=10.0, scale=4.0)
    far = torch.tensor([-1.0, 0.0])
    with torch.no_grad():  # columns c * 2 + s: class 0 = (e1, -e1), class 1 = (e2, -e1)
        sub.W.copy_(torch.stack([torch.tensor([1.0, 0.0]), far, torch.tensor([0.0, 1.0]), far], 1))
        plain.W.copy_(torch.eye(2))
    x = circle([20.0, 80.0]).float()
    labels = torch.tensor([0, 1])
    assert sub(x, labels).item() == pytest.approx(plain(x, labels).item(), abs=1e-6)


def test_proxy_anchor_value_by_hand_with_an_absent_class() -> None:
    margin, alpha = 0.1, 1.0
    criterion = ProxyAnchorLoss(num_classes=3, embedding_size=2, margin=margin, alpha=alpha)
    with torch.no_grad():
        criterion.proxies.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    loss = criterion(circle([0.0, 90.0]).float(), torch.tensor([0, 1]))
    r = math.sqrt(0.5)
    pos = 2 * math.log(1 + math.exp(alpha * (margin - 1))) / 2  # class 2 has no positive
    neg = (2 * math.log(1 + math.exp(alpha * margin)) + math.log(1 + 2 * math.exp(r + margin))) / 3
    assert loss.item() == pytest.approx(pos + neg, abs=1e-6)
    assert criterion.last_logs["pos_sim"] == pytest.approx(1.0)
    assert criterion.last_logs["neg_sim"] == pytest.approx(2 * r / 4, abs=1e-6)


@pytest.mark.parametrize("cls", [ArcFaceLoss, SubCenterArcFaceLoss, ProxyAnchorLoss])
def test_class_weight_losses_reject_labels_outside_the_classes(cls: type) -> None:
    criterion = cls(num_classes=3, embedding_size=2)
    with pytest.raises(EmbedlabError, match=r"labels must be class indices in \[0, 3\), got 0..7"):
        criterion(torch.randn(2, 2), torch.tensor([0, 7]))


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: ContrastiveLoss(neg_margin=-1), "margins must be >= 0"),
        (lambda: MultiSimilarityLoss(alpha=0), "alpha and beta must be > 0"),
        (lambda: SupConLoss(temperature=0), "temperature must be > 0"),
        (lambda: ArcFaceLoss(3, 2, margin=200), r"margin must be in \[0, 180\)"),
        (lambda: SubCenterArcFaceLoss(3, 2, sub_centers=0), "sub_centers must be >= 1"),
        (lambda: ProxyAnchorLoss(0, 2), "num_classes and embedding_size must be >= 1"),
        (lambda: MultiSimilarityMiner(epsilon=-1), "epsilon must be >= 0"),
    ],
)
def test_bad_arguments_are_one_line_errors(build, message: str) -> None:
    with pytest.raises(EmbedlabError, match=message):
        build()


def test_pair_loss_rejects_mismatched_labels() -> None:
    with pytest.raises(EmbedlabError, match="got 4 embedding rows but 3 labels"):
        SupConLoss()(torch.randn(4, 2), torch.tensor([0, 0, 1]))
