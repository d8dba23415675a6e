"""``train.loss`` / ``train.miner`` -> the criterion; class weights in their own param group."""

from __future__ import annotations

import pytest
import torch

from embedlab.config import ParamsError, parse_params
from embedlab.lightning import ExtractorModule
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
from embedlab.registries import CLASS_WEIGHTS, LOSSES, PAIR
from embedlab.registry import Entry
from embedlab.stages.train import build_criterion, build_module, class_indices


def criterion_for(num_classes: int = 5, embedding_size: int = 8, **train: object):
    return build_criterion(parse_params({"train": train}), num_classes, embedding_size)


@pytest.mark.parametrize(
    ("loss", "cls", "attributes"),
    [
        ({"name": "triplet", "triplet": {"margin": None}}, TripletLossWithMiner, {"margin": None}),
        (
            {"name": "contrastive", "contrastive": {"pos_margin": 0.1, "neg_margin": 0.7}},
            ContrastiveLoss,
            {"pos_margin": 0.1, "neg_margin": 0.7},
        ),
        (
            {"name": "multi_similarity", "multi_similarity": {"alpha": 1, "beta": 9, "base": 0.2}},
            MultiSimilarityLoss,
            {"alpha": 1.0, "beta": 9.0, "base": 0.2},
        ),
        ({"name": "supcon", "supcon": {"temperature": 0.3}}, SupConLoss, {"temperature": 0.3}),
        (
            {"name": "arcface", "arcface": {"margin": 10, "scale": 30}},
            ArcFaceLoss,
            {"margin": 10.0, "scale": 30.0, "num_classes": 5},
        ),
        (
            {"name": "subcenter_arcface", "subcenter_arcface": {"sub_centers": 2}},
            SubCenterArcFaceLoss,
            {"sub_centers": 2, "margin": 28.6, "num_classes": 5},
        ),
        (
            {"name": "proxy_anchor", "proxy_anchor": {"margin": 0.2, "alpha": 16}},
            ProxyAnchorLoss,
            {"margin": 0.2, "alpha": 16.0, "num_classes": 5},
        ),
    ],
)
def test_each_loss_takes_its_own_section(loss: dict, cls: type, attributes: dict) -> None:
    criterion = criterion_for(loss=loss)
    assert type(criterion) is cls
    for key, value in attributes.items():
        assert getattr(criterion, key) == value


def test_defaults_are_pmls() -> None:
    params = parse_params({})
    assert params.train.loss.contrastive.model_dump() == {"pos_margin": 0.0, "neg_margin": 1.0}
    assert params.train.loss.multi_similarity.model_dump() == {
        "alpha": 2.0,
        "beta": 50.0,
        "base": 0.5,
    }
    assert params.train.loss.supcon.temperature == 0.1
    assert params.train.loss.arcface.model_dump() == {"margin": 28.6, "scale": 64.0}
    assert params.train.loss.subcenter_arcface.sub_centers == 3
    assert params.train.loss.proxy_anchor.model_dump() == {"margin": 0.1, "alpha": 32.0}
    assert params.train.miner.epsilon == 0.1


def test_class_weight_losses_get_the_classes_and_the_width() -> None:
    assert criterion_for(7, 12, loss={"name": "arcface"}).W.shape == (12, 7)
    assert criterion_for(7, 12, loss={"name": "subcenter_arcface"}).W.shape == (12, 21)
    assert criterion_for(7, 12, loss={"name": "proxy_anchor"}).proxies.shape == (7, 12)


def test_miner_choice_for_pair_and_triplet_losses() -> None:
    assert criterion_for(loss={"name": "supcon"}).miner is None  # "all": every pair
    assert isinstance(criterion_for(loss={"name": "triplet"}).miner, AllTripletsMiner)
    hard = criterion_for(loss={"name": "contrastive"}, miner={"name": "hard"})
    assert isinstance(hard.miner, HardTripletsMiner)
    ms = criterion_for(loss={"name": "triplet"}, miner={"name": "multi_similarity", "epsilon": 0.3})
    assert isinstance(ms.miner, MultiSimilarityMiner) and ms.miner.epsilon == 0.3


def test_memory_size_wraps_the_pair_loss_in_a_memory_bank() -> None:
    criterion = criterion_for(
        loss={"name": "multi_similarity"},
        miner={"name": "multi_similarity", "memory_size": 256},
    )
    assert isinstance(criterion, CrossBatchMemory) and isinstance(
        criterion.loss, MultiSimilarityLoss
    )
    assert criterion.memory_size == 256 and criterion.embedding_size == 8
    assert isinstance(criterion.miner, MultiSimilarityMiner)


@pytest.mark.parametrize(
    ("train", "message"),
    [
        (
            {"loss": {"name": "triplet", "margin": 0.3}},
            r"train.loss: 'margin' moved: the triplet margin is train.loss.triplet.margin",
        ),
        (
            {"loss": {"name": "supcon", "supcon": {"temperatur": 0.2}}},
            r"unknown key 'train.loss.supcon.temperatur' \(did you mean "
            r"'train.loss.supcon.temperature'",
        ),
        ({"loss": {"supcon": {"temperature": 0}}}, "train.loss.supcon.temperature"),
        ({"loss": {"name": "arcface"}, "miner": {"memory_size": 64}}, "not 'arcface'; set it to 0"),
        ({"miner": {"memory_size": 64}}, "works with the pair losses"),
        (
            {"loss": {"name": "supcon"}, "miner": {"name": "hard", "memory_size": 64}},
            r"mines pairs with 'all', 'multi_similarity' or a pml.\* miner, not 'hard'",
        ),
    ],
)
def test_bad_loss_params_name_the_key(train: dict, message: str) -> None:
    with pytest.raises(ParamsError, match=message):
        parse_params({"train": train})


def test_switching_loss_by_name_alone_validates() -> None:
    """What ``dvc exp run -S train.loss.name=X`` does: only the name changes."""
    import yaml

    from tests.conftest import REPO_ROOT

    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    for name in LOSSES.names:
        raw["train"]["loss"]["name"] = name
        parse_params(raw)


def test_class_indices_keep_order_and_count_classes() -> None:
    codes, n = class_indices([40, 10, 40, 30])
    assert codes.tolist() == [2, 0, 2, 1] and n == 3


def test_class_weights_train_in_their_own_param_group() -> None:
    model = torch.nn.Linear(3, 4)
    criterion = ArcFaceLoss(num_classes=2, embedding_size=4)
    module = ExtractorModule(
        model, criterion, lambda ps: torch.optim.SGD(ps, lr=0.1), criterion_lr=0.5
    )
    optimizer = module.configure_optimizers()
    groups = optimizer.param_groups
    assert [g["lr"] for g in groups] == [0.1, 0.5]
    assert groups[1]["params"] == [criterion.W]
    before = criterion.W.detach().clone()
    loss = criterion(model(torch.randn(6, 3)), torch.tensor([0, 1, 0, 1, 0, 1]))
    loss.backward()
    optimizer.step()
    assert not torch.equal(criterion.W, before)
    assert "criterion.W" in module.state_dict()  # in the Lightning checkpoint


def test_a_criterion_without_weights_keeps_one_group() -> None:
    model = torch.nn.Linear(3, 4)
    module = ExtractorModule(model, SupConLoss(), lambda ps: torch.optim.SGD(ps, lr=0.1))
    assert len(module.configure_optimizers().param_groups) == 1


def test_the_train_stage_module_trains_class_weights_at_their_param() -> None:
    params = parse_params(
        {
            "train": {
                "loss": {"name": "proxy_anchor", "class_weights_lr": 0.03},
                "optimizer": {"lr": 0.002},
            }
        }
    )
    criterion = build_criterion(params, num_classes=3, embedding_size=4)
    module = build_module(params, torch.nn.Linear(3, 4), criterion, 10, None)
    optimizer = module.configure_optimizers()["optimizer"]
    assert [g["lr"] for g in optimizer.param_groups] == [0.002, 0.03]
    assert optimizer.param_groups[1]["params"] == [criterion.proxies]


@pytest.mark.parametrize(
    ("train", "message"),
    [
        (
            {"loss": {"name": "arcface"}, "miner": {"name": "hard"}},
            r"train.miner.name: 'arcface' takes no miner \(class weights\), not 'hard'; set it "
            r"to all",
        ),
        (
            {"loss": {"name": "pml.CosFaceLoss"}, "miner": {"name": "pml.BatchHardMiner"}},
            r"'pml.CosFaceLoss' takes no miner \(class weights\)",
        ),
        (
            {"loss": {"name": "pml.PNPLoss"}, "miner": {"name": "multi_similarity"}},
            r"'pml.PNPLoss' takes no miner \(whole batch\)",
        ),
        (
            {"loss": {"name": "pml.TripletMarginLoss"}, "miner": {"memory_size": 64}},
            r"memory bank works with the pair losses \(contrastive, .*pml.CircleLoss.*\), not "
            r"'pml.TripletMarginLoss'",
        ),
        (
            {"loss": {"name": "supcon", "distance": {"name": "pml.LpDistance"}}},
            r"train.loss: distance.name: 'pml.LpDistance' goes with a pml.\* loss; 'supcon' has "
            r"its own, set train.loss.distance.name: null",
        ),
        (
            {"loss": {"name": "supcon", "reducer": {"name": "pml.MeanReducer"}}},
            r"train.loss: reducer.name: 'pml.MeanReducer' goes with a pml.\* loss",
        ),
        (
            {"miner": {"name": "hard", "distance": {"name": "pml.CosineSimilarity"}}},
            r"train.miner: distance.name: 'pml.CosineSimilarity' goes with a pml.\* miner",
        ),
        (
            {"loss": {"name": "pml.CirclLoss"}},
            r"train.loss.name: unknown loss 'pml.CirclLoss' \(did you mean 'pml.CircleLoss'\? "
            r"known: triplet, contrastive, .*, pml.AngularLoss, .*pml.TupletMarginLoss\)$",
        ),
        (
            {"miner": {"name": "pml.BatchHardMiners"}},
            r"unknown miner 'pml.BatchHardMiners' \(did you mean 'pml.BatchHardMiner'\?",
        ),
    ],
)
def test_what_a_loss_kind_refuses_is_one_line(train: dict, message: str) -> None:
    with pytest.raises(ParamsError, match=message) as caught:
        parse_params({"train": train})
    assert "\n" not in str(caught.value)


def test_pml_class_weight_losses_get_the_classes_and_the_width() -> None:
    cosface = criterion_for(7, 12, loss={"name": "pml.CosFaceLoss", "pml": {"margin": 0.2}})
    assert cosface.loss.W.shape == (12, 7) and cosface.loss.margin == 0.2
    p2s = criterion_for(7, 12, loss={"name": "pml.P2SGradLoss"})  # PML says descriptors_dim
    assert p2s.loss.weight.shape == (12, 7)


def test_a_pml_pair_loss_takes_the_memory_bank_and_a_pml_miner() -> None:
    criterion = criterion_for(
        loss={"name": "pml.NTXentLoss"},
        miner={"name": "pml.PairMarginMiner", "memory_size": 32, "pml": {"pos_margin": 0.1}},
    )
    assert isinstance(criterion, CrossBatchMemory) and criterion.memory_size == 32
    assert criterion.loss.miner is None and criterion.miner.miner.pos_margin == 0.1


def test_a_new_loss_is_its_module_and_one_registry_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """Config validation and the factory read the kind from the registry entry alone."""
    entry = Entry("embedlab.losses.contrastive:ContrastiveLoss", PAIR)
    monkeypatch.setitem(LOSSES._entries, "my_pair_loss", entry)
    train = {"loss": {"name": "my_pair_loss"}, "miner": {"memory_size": 16}}
    criterion = criterion_for(**train)  # the memory bank is allowed: the kind says pair
    assert isinstance(criterion, CrossBatchMemory) and isinstance(criterion.loss, ContrastiveLoss)
    monkeypatch.setitem(LOSSES._entries, "my_pair_loss", Entry(entry.target, CLASS_WEIGHTS))
    with pytest.raises(ParamsError, match="'my_pair_loss' takes no miner"):
        parse_params({"train": {"loss": {"name": "my_pair_loss"}, "miner": {"name": "hard"}}})
