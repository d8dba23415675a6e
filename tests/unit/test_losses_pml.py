"""Every loss and miner against pytorch-metric-learning 2.9 (the oracle, test-only).

Same L2-normalised random batches, several seeds: the loss value and the gradients (with
respect to the embeddings, and to the class weights copied between the two) agree within
1e-5 relative in float32 (gradients: relative to their largest entry) and to 1e-10 in
float64, which shows the formulas and reductions are the same, not merely close.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from embedlab.losses import (
    ArcFaceLoss,
    ContrastiveLoss,
    CrossBatchMemory,
    MultiSimilarityLoss,
    ProxyAnchorLoss,
    SubCenterArcFaceLoss,
    SupConLoss,
    TripletLossWithMiner,
)
from embedlab.miners import AllTripletsMiner, HardTripletsMiner, MultiSimilarityMiner

pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
pml_miners = pytest.importorskip("pytorch_metric_learning.miners")

SEEDS = [0, 1, 2, 3]
DTYPES = {torch.float32: 1e-5, torch.float64: 1e-10}
N_CLASSES, DIM = 6, 16


def batch(seed: int, dtype: torch.dtype, n: int = 24, n_labels: int = 5) -> tuple:
    """L2-normalised embeddings (a leaf with grad) and labels with repeats."""
    gen = torch.Generator().manual_seed(seed)
    emb = F.normalize(torch.randn(n, DIM, generator=gen, dtype=dtype), dim=1)
    labels = torch.randint(0, n_labels, (n,), generator=gen)
    return emb.requires_grad_(True), labels


def value_and_grads(loss: torch.Tensor, *leaves: torch.Tensor) -> list[torch.Tensor]:
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    pairs = zip(leaves, grads, strict=True)
    return [loss.detach(), *(torch.zeros_like(x) if g is None else g for x, g in pairs)]


def assert_same(ours: list[torch.Tensor], theirs: list[torch.Tensor], rtol: float) -> None:
    for got, want in zip(ours, theirs, strict=True):
        scale = want.abs().max().item()
        torch.testing.assert_close(got, want, rtol=rtol, atol=rtol * max(scale, 1e-30))


PAIR_LOSSES: dict[str, tuple[Callable, Callable]] = {
    "contrastive": (ContrastiveLoss, pml_losses.ContrastiveLoss),
    "contrastive_margins": (
        lambda **k: ContrastiveLoss(pos_margin=0.3, neg_margin=0.9, **k),
        lambda: pml_losses.ContrastiveLoss(pos_margin=0.3, neg_margin=0.9),
    ),
    "multi_similarity": (MultiSimilarityLoss, pml_losses.MultiSimilarityLoss),
    "multi_similarity_args": (
        lambda **k: MultiSimilarityLoss(alpha=1.0, beta=20.0, base=0.3, **k),
        lambda: pml_losses.MultiSimilarityLoss(alpha=1.0, beta=20.0, base=0.3),
    ),
    "supcon": (SupConLoss, pml_losses.SupConLoss),
    "supcon_t05": (
        lambda **k: SupConLoss(temperature=0.5, **k),
        lambda: pml_losses.SupConLoss(temperature=0.5),
    ),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", PAIR_LOSSES)
def test_pair_loss_equals_pml_on_all_pairs(name: str, seed: int, dtype: torch.dtype) -> None:
    ours, theirs = PAIR_LOSSES[name]
    emb, labels = batch(seed, dtype)
    want = value_and_grads(theirs()(emb, labels), emb)
    got = value_and_grads(ours()(emb, labels), emb)
    assert want[0] > 0
    assert_same(got, want, DTYPES[dtype])


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", PAIR_LOSSES)
def test_pair_loss_with_multi_similarity_miner_equals_pml(name: str, seed: int) -> None:
    ours, theirs = PAIR_LOSSES[name]
    emb, labels = batch(seed, torch.float64)
    pairs = pml_miners.MultiSimilarityMiner(epsilon=0.1)(emb, labels)
    want = value_and_grads(theirs()(emb, labels, pairs), emb)
    got = value_and_grads(ours(miner=MultiSimilarityMiner(epsilon=0.1))(emb, labels), emb)
    assert_same(got, want, 1e-10)


@pytest.mark.parametrize("name", ["contrastive", "supcon"])
def test_pair_loss_on_triplets_converts_them_like_pml(name: str) -> None:
    ours, theirs = PAIR_LOSSES[name]
    emb, labels = batch(5, torch.float64)
    triplets = HardTripletsMiner().sample(emb.detach(), labels)
    want = value_and_grads(theirs()(emb, labels, triplets), emb)
    got = value_and_grads(ours(miner=HardTripletsMiner())(emb, labels), emb)
    assert_same(got, want, 1e-10)


def pml_triplet(reduction: str, margin: float) -> Callable:
    """PML's TripletMarginLoss with the reducer our ``reduction`` names."""
    reducers = pytest.importorskip("pytorch_metric_learning.reducers")
    reducer = reducers.MeanReducer() if reduction == "mean" else reducers.AvgNonZeroReducer()
    return pml_losses.TripletMarginLoss(margin=margin, reducer=reducer)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("margin", [0.05, 0.2, 1.5])
@pytest.mark.parametrize("reduction", ["mean", "mean_nonzero"])
def test_triplet_loss_equals_pml_with_the_reducer_of_its_reduction(
    reduction: str, margin: float, seed: int, dtype: torch.dtype
) -> None:
    """``mean`` (the pipeline's, OML's) is PML with ``MeanReducer``; ``mean_nonzero`` is PML's
    default ``AvgNonZeroReducer``; both on every triplet and on batch-hard ones. PML
    normalises inside its distance, the pipeline's model before the loss (the leaf here is
    not normalised, so the gradients go through the normalisation on both sides)."""
    emb, labels = batch(seed, dtype)
    raw = (emb.detach() * 3.0).requires_grad_(True)
    for miner in (AllTripletsMiner(), HardTripletsMiner()):
        ours = TripletLossWithMiner(margin, miner=miner, reduction=reduction)
        got = value_and_grads(ours(F.normalize(raw, dim=1), labels), raw)
        triplets = miner.sample(emb.detach(), labels)
        want = value_and_grads(pml_triplet(reduction, margin)(raw, labels, triplets), raw)
        assert_same(got, want, DTYPES[dtype])


def test_the_two_triplet_reductions_differ_when_some_triplets_are_inactive() -> None:
    emb, labels = batch(0, torch.float64)
    mean = TripletLossWithMiner(0.2, reduction="mean")(emb, labels)
    nonzero = TripletLossWithMiner(0.2, reduction="mean_nonzero")(emb, labels)
    pml_default = pml_losses.TripletMarginLoss(margin=0.2)(emb, labels)
    torch.testing.assert_close(nonzero, pml_default)
    assert mean < nonzero  # the inactive triplets count as zeros in the mean


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("epsilon", [0.0, 0.1, 0.5])
def test_multi_similarity_miner_equals_pml(epsilon: float, seed: int, dtype: torch.dtype) -> None:
    emb, labels = batch(seed, dtype)
    want = pml_miners.MultiSimilarityMiner(epsilon=epsilon)(emb, labels)
    got = MultiSimilarityMiner(epsilon=epsilon).mine(emb.detach(), labels)
    assert len(got[0]) > 0 and len(got[2]) > 0
    for g, w in zip(got, want, strict=True):
        assert torch.equal(g, w)


CLASS_LOSSES: dict[str, tuple[Callable, Callable, str]] = {
    "arcface": (ArcFaceLoss, pml_losses.ArcFaceLoss, "W"),
    "arcface_args": (
        lambda **k: ArcFaceLoss(margin=10.0, scale=16.0, **k),
        lambda **k: pml_losses.ArcFaceLoss(margin=10.0, scale=16.0, **k),
        "W",
    ),
    "subcenter_arcface": (SubCenterArcFaceLoss, pml_losses.SubCenterArcFaceLoss, "W"),
    "subcenter_arcface_2": (
        lambda **k: SubCenterArcFaceLoss(sub_centers=2, **k),
        lambda **k: pml_losses.SubCenterArcFaceLoss(sub_centers=2, **k),
        "W",
    ),
    "proxy_anchor": (ProxyAnchorLoss, pml_losses.ProxyAnchorLoss, "proxies"),
    "proxy_anchor_args": (
        lambda **k: ProxyAnchorLoss(margin=0.2, alpha=16.0, **k),
        lambda **k: pml_losses.ProxyAnchorLoss(margin=0.2, alpha=16.0, **k),
        "proxies",
    ),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", CLASS_LOSSES)
def test_class_weight_loss_equals_pml(name: str, seed: int, dtype: torch.dtype) -> None:
    ours_cls, theirs_cls, attribute = CLASS_LOSSES[name]
    torch.manual_seed(seed)
    theirs = theirs_cls(num_classes=N_CLASSES, embedding_size=DIM).to(dtype)
    ours = ours_cls(num_classes=N_CLASSES, embedding_size=DIM).to(dtype)
    assert getattr(ours, attribute).shape == getattr(theirs, attribute).shape
    with torch.no_grad():
        getattr(ours, attribute).copy_(getattr(theirs, attribute))
    emb, labels = batch(seed, dtype, n_labels=N_CLASSES - 1)  # one class absent
    want = value_and_grads(theirs(emb, labels), emb, getattr(theirs, attribute))
    got = value_and_grads(ours(emb, labels), emb, getattr(ours, attribute))
    assert_same(got, want, DTYPES[dtype])


@pytest.mark.parametrize("name", ["arcface", "subcenter_arcface", "proxy_anchor"])
def test_class_weights_are_initialised_like_pml(name: str) -> None:
    ours_cls, theirs_cls, attribute = CLASS_LOSSES[name]
    torch.manual_seed(0)
    theirs = getattr(theirs_cls(num_classes=50, embedding_size=64), attribute)
    torch.manual_seed(0)
    ours = getattr(ours_cls(num_classes=50, embedding_size=64), attribute)
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("miner", [None, "multi_similarity"])
@pytest.mark.parametrize("name", ["contrastive", "multi_similarity", "supcon"])
def test_cross_batch_memory_equals_pml_over_steps(name: str, miner: str | None) -> None:
    ours_cls, theirs_cls = PAIR_LOSSES[name]
    size = 40  # wraps around after two steps of 16
    theirs = pml_losses.CrossBatchMemory(
        theirs_cls(),
        DIM,
        memory_size=size,
        miner=pml_miners.MultiSimilarityMiner() if miner else None,
    )
    ours = CrossBatchMemory(
        ours_cls(), DIM, memory_size=size, miner=MultiSimilarityMiner() if miner else None
    )
    for step in range(5):
        emb, labels = batch(10 + step, torch.float64, n=16)
        want = value_and_grads(theirs(emb, labels), emb)
        got = value_and_grads(ours(emb, labels), emb)
        assert_same(got, want, 1e-10)
    assert torch.equal(ours.memory.embeddings, theirs.embedding_memory)
    assert torch.equal(ours.memory.labels, theirs.label_memory)
