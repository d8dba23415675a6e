"""Every registry entry builds, and config validation reads its names from the registry."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from embedlab.config import LossParams, ParamsError, SamplerParams, parse_params
from embedlab.errors import EmbedlabError
from embedlab.miners import build_miner
from embedlab.registries import (
    ALL,
    DISTANCES,
    INDEXES,
    LOSSES,
    MINERS,
    OPTIMIZERS,
    PML_PREFIX,
    REDUCERS,
    SAMPLERS,
    SOURCES,
    TRACKERS,
    LossKind,
)
from embedlab.registry import Registry
from embedlab.stages.criterion import build_criterion


def _entries(registry: Registry) -> list[str]:
    return list(registry.names)


@pytest.mark.parametrize("name", _entries(SOURCES))
def test_every_source_resolves_to_a_prepare_function(name: str) -> None:
    assert callable(SOURCES.get(name))


# Arguments a pml.* loss needs that have no default in PML.
PML_REQUIRED = {"pml.RankedListLoss": {"margin": 0.4, "Tn": 10.0}}


@pytest.mark.parametrize("name", _entries(LOSSES))
def test_every_loss_builds_and_backpropagates(name: str) -> None:
    """Through the train stage's factory, which reads the loss's kind from the registry."""
    params = parse_params({"train": {"loss": {"name": name, "pml": PML_REQUIRED.get(name, {})}}})
    loss = build_criterion(params, num_classes=4, embedding_size=4)
    torch.manual_seed(0)
    features = torch.randn(8, 4, requires_grad=True)
    value = loss(features, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
    value.backward()
    assert torch.isfinite(value) and features.grad is not None and features.grad.any()
    assert all(isinstance(v, float) for v in loss.last_logs.values())
    if not name.startswith(PML_PREFIX):  # ours all log statistics; PML's only some
        assert loss.last_logs
    weights = [p for p in loss.parameters() if p.requires_grad]
    assert bool(weights) == LOSSES.tag(name).class_weights


@pytest.mark.parametrize("name", _entries(LOSSES))
def test_every_loss_declares_its_kind(name: str) -> None:
    assert isinstance(LOSSES.tag(name), LossKind)
    assert (LOSSES.extra(name) == "pml") == name.startswith(PML_PREFIX)


@pytest.mark.parametrize("name", [n for n in LOSSES.names if not n.startswith(PML_PREFIX)])
def test_every_loss_has_its_params_section(name: str) -> None:
    assert set(LossParams(name=name).arguments()) <= set(
        inspect.signature(LOSSES.get(name)).parameters
    )


@pytest.mark.parametrize("name", _entries(MINERS))
def test_every_miner_builds_and_mines(name: str) -> None:
    torch.manual_seed(0)
    anchors, positives, negatives = build_miner(name).sample(
        torch.randn(12, 3), torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    )
    assert len(anchors) == len(positives) == len(negatives) > 0


@pytest.mark.parametrize("registry", [DISTANCES, REDUCERS], ids=lambda r: r.kind)
def test_every_distance_and_reducer_trains_a_pml_loss(registry: Registry) -> None:
    """Each builds and reduces (ClassWeightedReducer's weights as a list, as in params.yaml)."""
    for name in registry.names:
        part = registry.kind
        arguments = {
            "pml.ClassWeightedReducer": {"weights": [1.0, 2.0, 1.0, 0.5]},
            "pml.ThresholdReducer": {"low": 0.1},
        }.get(name, {})
        # DivisorReducer needs a loss that reports its divisor (PML's MarginLoss does).
        loss = "pml.MarginLoss" if name.endswith("DivisorReducer") else "pml.ContrastiveLoss"
        raw = {"name": loss, part: {"name": name, "pml": arguments}}
        criterion = build_criterion(parse_params({"train": {"loss": raw}}), 4, 4)
        # (losses with several terms put the reducer inside PML's MultipleReducers)
        inside = getattr(criterion.loss, part).modules()
        assert any(type(m) is registry.get(name) for m in inside), name
        features = torch.randn(8, 4, requires_grad=True)
        value = criterion(features, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
        value.backward()
        assert value.ndim == 0 and torch.isfinite(value), name


@pytest.mark.parametrize("name", _entries(SAMPLERS))
def test_every_sampler_builds_balanced_batches(name: str) -> None:
    labels = np.repeat(np.arange(8), 4)
    categories = np.repeat(["a", "b"], 16)
    extra = {"categories": categories} if SAMPLERS.tag(name) == "categories" else {}
    sampler = SAMPLERS.build(
        name,
        labels=labels,
        seed=0,
        **SamplerParams(name=name, n_labels=2, n_instances=4).arguments(),
        **extra,
    )
    batches = list(sampler)
    assert batches and all(len(b) == sampler.batch_size for b in batches)


@pytest.mark.parametrize("name", _entries(OPTIMIZERS))
def test_every_optimizer_builds(name: str) -> None:
    weight = torch.nn.Parameter(torch.ones(2))
    optimizer = OPTIMIZERS.build(name, params=[weight], lr=0.1)
    weight.sum().backward()
    optimizer.step()
    assert not torch.equal(weight.detach(), torch.ones(2))


# Non-default settings of every backend, all kept under one tracking.store.
SETTINGS = {
    "experiment": "exp-settings",
    "store": "stores",
    "mlflow": {"flush_every": 7},
    "wandb": {"project": "proj-w", "entity": "team-w", "mode": "disabled", "init_timeout": 4.0},
    "neptune": {"project": "team/proj-n", "mode": "debug", "start_timeout": 6.0},
    "dvclive": {"dir": "live-here"},
}


class _Opened(dict):
    """What a faked ``wandb.init`` / ``neptune.init_run`` returns: takes fields, logs nothing."""

    def define_metric(self, *args: object, **kwargs: object) -> None:
        pass

    finish = stop = define_metric


def _start(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, dict]:
    """Build ``name`` as the stages do (``build_tracker``) and open a run; the hosted
    clients' ``init`` is faked and records the arguments it was given."""
    from embedlab.tracking import RunInfo, build_tracker

    calls: dict[str, Any] = {}

    def fake_init(**kwargs: Any) -> _Opened:
        calls.update(kwargs)
        return _Opened()

    if name == "wandb":
        monkeypatch.setattr("wandb.init", fake_init)
    if name == "neptune":
        monkeypatch.setattr("neptune.init_run", fake_init)
    params = parse_params({"tracking": {**SETTINGS, "loggers": [name]}})
    tracker = build_tracker(name, params, tmp_path)
    tracker.start(RunInfo(run_name="run-a", params={"seed": 0}, tags={}, stage="validate"))
    return tracker, calls


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.slow) if n == "mlflow" else n  # sqlite migrations
        for n in _entries(TRACKERS)
    ],
)
def test_every_tracker_is_built_with_its_settings(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip({"tensorboard": "tensorboard", "csv": "csv"}.get(name, name))
    tracker, calls = _start(name, tmp_path, monkeypatch)
    store = tmp_path / "stores"
    assert tracker.name == name and tracker.root == store
    if name == "tensorboard":
        assert tracker.log_dir.parent == store / "logs" / "tensorboard"
    elif name == "csv":
        assert tracker.dir.parent == store / "logs" / "csv"
    elif name == "dvclive":
        assert (store / "live-here" / "validate").is_dir()
    elif name == "mlflow":
        assert tracker.batch_records == 7 and tracker.uri == f"sqlite:///{store / 'mlflow.db'}"
        assert tracker.client.get_experiment_by_name("exp-settings") is not None
    elif name == "wandb":
        assert (calls["project"], calls["entity"], calls["mode"]) == (
            "proj-w",
            "team-w",
            "disabled",
        )
        assert calls["settings"].init_timeout == 4.0 and calls["dir"] == str(store / "logs")
    elif name == "neptune":
        assert (calls["project"], calls["mode"]) == ("team/proj-n", "debug")
    tracker.finish()


@pytest.mark.parametrize("name", _entries(INDEXES))
def test_every_index_builds_and_searches(name: str) -> None:
    if name == "faiss":
        pytest.importorskip("faiss")
    gallery = np.eye(4, dtype=np.float32)
    _, indices = INDEXES.build(name, embeddings=gallery, metric="euclidean").search(gallery[:2], 1)
    assert indices[:, 0].tolist() == [0, 1]


@pytest.mark.parametrize(
    ("section", "key", "registry"),
    [
        ({"prepare": {"source": "{}"}}, "prepare.source", SOURCES),
        ({"train": {"loss": {"name": "{}"}}}, "train.loss.name", LOSSES),
        ({"train": {"miner": {"name": "{}"}}}, "train.miner.name", MINERS),
        ({"train": {"optimizer": {"name": "{}"}}}, "train.optimizer.name", OPTIMIZERS),
        ({"tracking": {"loggers": ["{}"]}}, "tracking.loggers", TRACKERS),
        ({"embed": {"index": "{}"}}, "embed.index", INDEXES),
        ({"train": {"sampler": {"name": "{}"}}}, "train.sampler.name", SAMPLERS),
        (
            {"train": {"loss": {"name": "pml.CircleLoss", "distance": {"name": "{}"}}}},
            "train.loss.distance.name",
            DISTANCES,
        ),
        (
            {"train": {"loss": {"name": "pml.CircleLoss", "reducer": {"name": "{}"}}}},
            "train.loss.reducer.name",
            REDUCERS,
        ),
    ],
)
def test_config_accepts_exactly_the_registered_names(
    section: dict, key: str, registry: Registry
) -> None:
    def filled(name: str) -> dict:
        import json

        return json.loads(json.dumps(section).replace("{}", name))

    for name in registry.names:
        parse_params(filled(name))
    typo = registry.names[0][:-1] + "x"
    with pytest.raises(ParamsError, match=rf"params.yaml: {key}: unknown {registry.kind} '{typo}'"):
        parse_params(filled(typo))


def test_unknown_name_at_lookup_names_the_key() -> None:
    with pytest.raises(EmbedlabError, match=r"train.loss.name: unknown loss 'tripplet' \(did you"):
        LOSSES.get("tripplet")


def test_every_registry_of_the_module_is_listed_in_all() -> None:
    import embedlab.registries as module

    defined = [v for v in vars(module).values() if isinstance(v, Registry)]
    assert sorted(id(r) for r in defined) == sorted(id(r) for r in ALL.values())


@pytest.mark.parametrize("registry", [LOSSES, MINERS, DISTANCES, REDUCERS, SAMPLERS])
def test_docs_losses_lists_every_name(registry: Registry) -> None:
    """docs/losses.md names each loss, miner, distance, reducer and sampler params accept."""
    from tests.conftest import REPO_ROOT

    text = (REPO_ROOT / "docs" / "losses.md").read_text()
    for name in registry.names:
        assert f"`{name.removeprefix(PML_PREFIX)}`" in text, name
