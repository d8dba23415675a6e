"""Every registry entry builds, and config validation reads its names from the registry."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from embedlab.config import LossParams, ParamsError, parse_params
from embedlab.errors import EmbedlabError
from embedlab.registries import ALL, INDEXES, LOSSES, MINERS, OPTIMIZERS, SOURCES, TRACKERS
from embedlab.registry import Registry


def _entries(registry: Registry) -> list[str]:
    return list(registry.names)


@pytest.mark.parametrize("name", _entries(SOURCES))
def test_every_source_resolves_to_a_prepare_function(name: str) -> None:
    assert callable(SOURCES.get(name))


@pytest.mark.parametrize("name", _entries(LOSSES))
def test_every_loss_builds_and_backpropagates(name: str) -> None:
    # Class-weight losses need the classes and the width; the others build bare.
    takes_classes = getattr(LOSSES.get(name), "takes_class_weights", False)
    sizes = {"num_classes": 4, "embedding_size": 4} if takes_classes else {}
    if name == "triplet":
        sizes["need_logs"] = True  # OML's default is False
    loss = LOSSES.build(name, **sizes)
    features = torch.randn(8, 4, requires_grad=True)
    value = loss(features, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
    value.backward()
    assert torch.isfinite(value) and features.grad is not None and features.grad.any()
    assert loss.last_logs and all(isinstance(v, float) for v in loss.last_logs.values())


@pytest.mark.parametrize("name", _entries(LOSSES))
def test_every_loss_has_its_params_section(name: str) -> None:
    assert set(LossParams(name=name).arguments()) <= set(
        inspect.signature(LOSSES.get(name)).parameters
    )


@pytest.mark.parametrize("name", _entries(MINERS))
def test_every_miner_builds_and_mines(name: str) -> None:
    torch.manual_seed(0)
    anchors, positives, negatives = MINERS.build(name).sample(
        torch.randn(6, 3), torch.tensor([0, 0, 1, 1, 2, 2])
    )
    assert len(anchors) == len(positives) == len(negatives) > 0


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
