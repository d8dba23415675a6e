"""``pml.*`` losses: each trains a step through the train stage's module; PmlLoss is PML."""

from __future__ import annotations

import sys
from typing import Any

import lightning as L
import pytest
import torch
from pytorch_metric_learning import distances as pml_distances
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning import reducers as pml_reducers

from embedlab.config import parse_params
from embedlab.errors import EmbedlabError
from embedlab.losses import CrossBatchMemory, PmlLoss
from embedlab.miners import build_miner
from embedlab.registries import LOSSES, PML_PREFIX
from embedlab.stages.criterion import build_criterion
from embedlab.stages.train import build_module

PML_LOSSES = [name for name in LOSSES.names if name.startswith(PML_PREFIX)]
REQUIRED = {"pml.RankedListLoss": {"margin": 0.4, "Tn": 10.0}}
"""Arguments without a default in PML."""
N_CLASSES, WIDTH = 4, 8


def _batches(n_batches: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Balanced batches (4 classes x 4 items) of separable 6-d inputs."""
    gen = torch.Generator().manual_seed(seed)
    centers = torch.randn(N_CLASSES, 6, generator=gen) * 2
    labels = torch.arange(N_CLASSES).repeat_interleave(4)
    return [
        {"input_tensors": centers[labels] + torch.randn(16, 6, generator=gen), "labels": labels}
        for _ in range(n_batches)
    ]


class _Step:
    """One optimizer step of the train stage's module (``build_criterion`` + ``build_module``)."""

    def __init__(self, train: dict[str, Any]) -> None:
        params = parse_params(
            {"train": {**train, "loss": {"class_weights_lr": 0.05, **train["loss"]}}}
        )
        L.seed_everything(0, verbose=False)
        self.model = torch.nn.Linear(6, WIDTH)
        self.criterion = build_criterion(params, N_CLASSES, WIDTH)
        self.initial = [
            p.detach().clone() for p in (*self.model.parameters(), *self.criterion.parameters())
        ]
        module = build_module(params, self.model, self.criterion, 1, inference_transform=None)
        self.logged: dict[str, float] = {}
        logged = self.logged

        class Capture(L.Callback):
            def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
                logged.update({k: float(v) for k, v in trainer.callback_metrics.items()})

        self.trainer = L.Trainer(
            max_steps=1,
            accelerator="cpu",
            logger=False,
            callbacks=[Capture()],
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        self.trainer.fit(module, torch.utils.data.DataLoader(_batches(1), batch_size=None))

    def changed(self) -> list[bool]:
        """For each model then criterion parameter: did the step change it?"""
        now = [*self.model.parameters(), *self.criterion.parameters()]
        return [not torch.equal(p.detach(), p0) for p, p0 in zip(now, self.initial, strict=True)]


@pytest.mark.parametrize("name", PML_LOSSES)
def test_every_pml_loss_trains_a_step_through_the_module(name: str) -> None:
    step = _Step({"loss": {"name": name, "pml": REQUIRED.get(name, {})}})
    assert isinstance(step.criterion, PmlLoss) and type(step.criterion.loss) is LOSSES.get(name)
    assert torch.isfinite(torch.tensor(step.logged["train/loss"]))
    assert all(step.changed()), "a weight of the model or of the loss did not learn"
    class_weights = list(step.criterion.parameters())
    assert bool(class_weights) == LOSSES.tag(name).class_weights
    groups = step.trainer.optimizers[0].param_groups
    if class_weights:  # their own group, at train.loss.class_weights_lr, as ours
        assert [g["initial_lr"] for g in groups] == [0.001, 0.05]
        assert groups[1]["params"] == class_weights
    else:
        assert len(groups) == 1


def _batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(16, WIDTH, generator=gen), torch.arange(N_CLASSES).repeat_interleave(4)


@pytest.mark.parametrize(
    ("train", "theirs"),
    [
        (
            {"loss": {"name": "pml.CircleLoss", "pml": {"m": 0.3, "gamma": 40}}},
            lambda: (pml_losses.CircleLoss(m=0.3, gamma=40), None),
        ),
        (
            {
                "loss": {"name": "pml.TripletMarginLoss", "pml": {"margin": 0.1}},
                "miner": {"name": "pml.TripletMarginMiner", "pml": {"margin": 0.3}},
            },
            lambda: (
                pml_losses.TripletMarginLoss(margin=0.1),
                pml_miners.TripletMarginMiner(margin=0.3),
            ),
        ),
        (
            {
                "loss": {
                    "name": "pml.ContrastiveLoss",
                    "distance": {"name": "pml.CosineSimilarity"},
                    "reducer": {"name": "pml.MeanReducer"},
                },
                "miner": {"name": "pml.MultiSimilarityMiner", "pml": {"epsilon": 0.2}},
            },
            lambda: (
                pml_losses.ContrastiveLoss(
                    distance=pml_distances.CosineSimilarity(),
                    reducer=pml_reducers.MeanReducer(),
                ),
                pml_miners.MultiSimilarityMiner(epsilon=0.2),
            ),
        ),
    ],
    ids=["circle", "triplet+triplet_miner", "contrastive+cosine+mean+ms_miner"],
)
def test_a_pml_criterion_gives_pmls_loss_and_gradient(train: dict, theirs: Any) -> None:
    ours = build_criterion(parse_params({"train": train}), N_CLASSES, WIDTH)
    loss, miner = theirs()
    for seed in range(3):
        x, labels = _batch(seed)
        a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
        value = ours(a, labels)
        expected = loss(b, labels, miner(b, labels) if miner is not None else None)
        (value + 0).backward()
        expected.backward()
        torch.testing.assert_close(value, expected)
        torch.testing.assert_close(a.grad, b.grad)


def test_pml_statistics_are_the_criterion_logs() -> None:
    train = {
        "loss": {"name": "pml.ArcFaceLoss"},
    }
    arcface = build_criterion(parse_params({"train": train}), N_CLASSES, WIDTH)
    arcface(*_batch(0))
    assert set(arcface.last_logs) == {"avg_angle"} and 0 < arcface.last_logs["avg_angle"] < 180

    train = {
        "loss": {"name": "pml.TripletMarginLoss"},
        "miner": {"name": "pml.TripletMarginMiner", "distance": {"name": "pml.LpDistance"}},
    }
    criterion = build_criterion(parse_params({"train": train}), N_CLASSES, WIDTH)
    criterion(*_batch(0))
    logs = criterion.last_logs
    assert {"miner_num_triplets", "miner_pos_pair_dist", "miner_neg_pair_dist"} <= set(logs)
    assert logs["miner_num_triplets"] > 0
    assert all(isinstance(v, float) for v in logs.values())


@pytest.mark.parametrize("loss", ["triplet", "supcon", "pml.SupConLoss"])
def test_a_pml_miner_feeds_every_loss_and_logs_its_statistics(loss: str) -> None:
    train = {"loss": {"name": loss}, "miner": {"name": "pml.BatchHardMiner"}}
    criterion = build_criterion(parse_params({"train": train}), N_CLASSES, WIDTH)
    x, labels = _batch(1)
    value = criterion(x.requires_grad_(), labels)
    value.backward()
    assert torch.isfinite(value) and x.grad is not None and x.grad.any()
    assert criterion.last_logs["miner_num_triplets"] == 16.0  # one per anchor


def test_a_pml_pair_loss_with_a_memory_bank_equals_pmls_cross_batch_memory() -> None:
    train = {
        "loss": {"name": "pml.ContrastiveLoss"},
        "miner": {"name": "pml.MultiSimilarityMiner", "memory_size": 48},
    }
    ours = build_criterion(parse_params({"train": train}), N_CLASSES, WIDTH)
    assert isinstance(ours, CrossBatchMemory) and isinstance(ours.loss, PmlLoss)
    theirs = pml_losses.CrossBatchMemory(
        pml_losses.ContrastiveLoss(), WIDTH, memory_size=48, miner=pml_miners.MultiSimilarityMiner()
    )
    for seed in range(5):  # the bank fills, then wraps
        x, labels = _batch(seed)
        torch.testing.assert_close(ours(x, labels), theirs(x, labels))
    assert ours.last_logs["memory_items"] == 48.0


def test_a_missing_pytorch_metric_learning_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "pytorch_metric_learning.losses", None)
    params = parse_params({"train": {"loss": {"name": "pml.CircleLoss"}}})  # validates: no import
    with pytest.raises(EmbedlabError) as caught:
        build_criterion(params, N_CLASSES, WIDTH)
    message = str(caught.value)
    assert "\n" not in message
    assert message == (
        "params.yaml: train.loss.name: loss 'pml.CircleLoss' needs pytorch_metric_learning, "
        "which is not installed: pip install 'embedlab[pml]'"
    )


def test_bad_pml_arguments_are_one_line_naming_the_key() -> None:
    params = parse_params({"train": {"loss": {"name": "pml.CircleLoss", "pml": {"mm": 0.3}}}})
    with pytest.raises(
        EmbedlabError, match=r"^params.yaml: train.loss.pml: loss 'pml.CircleLoss' "
    ):
        build_criterion(params, N_CLASSES, WIDTH)
    params = parse_params({"train": {"miner": {"name": "pml.BatchHardMiner", "pml": {"x": 1}}}})
    with pytest.raises(EmbedlabError, match=r"^params.yaml: train.miner.pml: miner "):
        build_criterion(params, N_CLASSES, WIDTH)


def test_build_miner_wraps_pml_miners() -> None:
    miner = build_miner("pml.PairMarginMiner", pos_margin=0.1)
    assert miner.miner.pos_margin == 0.1 and miner.miner.collect_stats
