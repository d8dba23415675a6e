"""Lightning smoke test: ExtractorModule + MetricValCallback on a tiny in-memory problem."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers.logger import Logger
from PIL import Image

from embedlab.lightning import ExtractorModule, MetricValCallback
from embedlab.losses import TripletLossWithMiner
from embedlab.metrics import EmbeddingMetrics
from embedlab.miners import AllTripletsMiner


class MemoryLogger(Logger):
    def __init__(self) -> None:
        super().__init__()
        self.metrics: list[tuple[int, dict[str, float]]] = []
        self.images: list[tuple[str, int]] = []

    name = "memory"
    version = "0"

    def log_hyperparams(self, *args: Any, **kwargs: Any) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.metrics.append((step or 0, dict(metrics)))

    def log_image(self, key: str, image: Image.Image, step: int) -> None:
        self.images.append((key, step))


class VectorValidation:
    """The parts of a DatasetQueryGallery the callback reads, over in-memory vectors."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, idx: int) -> dict[str, Any]:  # an inference item
        return {"idx": idx, "input_tensors": self.items[idx]["input_tensors"]}

    def columns(self) -> dict[str, Any]:
        n = len(self.items)
        return {
            "labels": torch.tensor([item["labels"] for item in self.items]),
            "is_query": torch.ones(n, dtype=torch.bool),
            "is_gallery": torch.ones(n, dtype=torch.bool),
            "paths": [item["paths"] for item in self.items],
            "idx": torch.arange(n),
        }

    def read_image(self, idx: int) -> Image.Image:
        return Image.new("RGB", (8, 8))


def _items(n: int, generator: torch.Generator) -> list[dict[str, Any]]:
    """Dataset items of 4 well-separated classes (batches of 16 hold 4 x 4)."""
    centers = torch.randn(4, 8, generator=generator) * 3
    labels = torch.arange(4).repeat(n // 4)
    x = centers[labels] + torch.randn(n, 8, generator=generator)
    return [
        {
            "input_tensors": x[i],
            "labels": int(labels[i]),
            "idx": i,
            "is_query": True,
            "is_gallery": True,
            "paths": f"{i}.png",
        }
        for i in range(n)
    ]


def test_fit_logs_losses_miner_stats_metrics_and_images(tmp_path) -> None:
    L.seed_everything(0, verbose=False)
    gen = torch.Generator().manual_seed(0)
    train, val = _items(96, gen), _items(32, gen)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    criterion = TripletLossWithMiner(margin=0.2, miner=AllTripletsMiner(), need_logs=True)
    module = ExtractorModule(model, criterion, torch.optim.Adam(model.parameters(), lr=1e-2))
    metric = EmbeddingMetrics(
        cmc_top_k=(1,), precision_top_k=(3,), map_top_k=(3,), extra_keys=("paths",)
    )
    seen: list[dict] = []
    validation = VectorValidation(val)
    callback = MetricValCallback(
        metric,
        validation,  # type: ignore[arg-type]
        log_images=True,
        image_options={"n_queries": 2, "n_worst": 2, "top_k": 3, "worst_by": "map@3"},
        on_metrics=seen.append,
    )
    logger = MemoryLogger()
    trainer = L.Trainer(
        max_epochs=3,
        accelerator="cpu",
        logger=logger,
        callbacks=[callback],
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=str(tmp_path),
    )
    val_loader = torch.utils.data.DataLoader(validation, batch_size=16)
    trainer.validate(module, val_loader, verbose=False)
    trainer.fit(module, torch.utils.data.DataLoader(train, batch_size=16), val_loader)
    step_keys = set().union(*(m.keys() for _, m in logger.metrics))
    assert {
        "train/loss",
        "train/pos_dist",
        "train/neg_dist",
        "train/active_tri",
        "train/lr",
    } <= step_keys
    assert "val/OVERALL/cmc@1" in step_keys and "val/OVERALL/map@3" in step_keys
    losses = [m["train/loss"] for _, m in logger.metrics if "train/loss" in m]
    assert len(losses) == 18  # every step of 3 epochs x 6 batches
    assert len(seen) == 4  # before training + after each epoch
    assert sum(losses[-6:]) < sum(losses[:6])  # it learns
    assert seen[-1].metrics["OVERALL"]["n_queries"] == 32
    assert {key for key, _ in logger.images} == {"val/predictions", "val/worst_queries"}
    assert len(logger.images) == 8


class NanEveryOther(torch.nn.Module):
    """A loss that is NaN on every second call (a batch gone bad)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        loss = embeddings.pow(2).mean()
        return loss * float("nan") if self.calls % 2 == 0 else loss


def _fit_with(module: ExtractorModule, tmp_path, items: list[dict[str, Any]]) -> MemoryLogger:
    logger = MemoryLogger()
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=logger,
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
    )
    trainer.fit(module, torch.utils.data.DataLoader(items, batch_size=16))
    return logger


def test_a_nonfinite_loss_stops_training_in_one_line(tmp_path) -> None:
    from embedlab.lightning.module import TrainingDiverged

    model = torch.nn.Linear(8, 4)
    module = ExtractorModule(model, NanEveryOther(), torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(TrainingDiverged, match=r"training diverged at step 1: loss is nan; lower"):
        _fit_with(module, tmp_path, _items(64, torch.Generator().manual_seed(0)))


def test_skip_batch_skips_nonfinite_losses_and_logs_no_nan(tmp_path) -> None:
    model = torch.nn.Linear(8, 4)
    before = model.weight.detach().clone()
    module = ExtractorModule(
        model,
        NanEveryOther(),
        torch.optim.SGD(model.parameters(), lr=0.1),
        on_nonfinite="skip_batch",
    )
    logger = _fit_with(module, tmp_path, _items(64, torch.Generator().manual_seed(0)))
    assert module.skipped_batches == 2  # batches 2 and 4 of 4
    losses = [m["train/loss"] for _, m in logger.metrics if "train/loss" in m]
    assert len(set(losses)) == 2 and all(math.isfinite(v) for v in losses)
    assert not torch.equal(model.weight.detach(), before)  # the good batches still trained


def test_channels_last_module_gives_the_same_embeddings() -> None:
    torch.manual_seed(0)
    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten())
    images = torch.rand(2, 3, 6, 6)
    expected = conv(images)
    module = ExtractorModule(conv, channels_last=True)
    assert conv[0].weight.is_contiguous(memory_format=torch.channels_last)
    out = module.embed_step({"idx": torch.arange(2), "input_tensors": images})["embeddings"]
    torch.testing.assert_close(out, expected)


def test_a_trainer_prints_no_litlogger_tip_and_no_leafspec_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging
    import warnings

    from lightning.pytorch.utilities._pytree import _tree_flatten

    from embedlab.config import TrainerParams
    from embedlab.lightning.trainer import LIGHTNING_LOG, build_trainer

    with caplog.at_level(logging.INFO, logger=LIGHTNING_LOG):
        build_trainer(TrainerParams(), logger=True, enable_progress_bar=False)
    messages = [r.getMessage() for r in caplog.records]
    assert any("GPU available" in m for m in messages)  # Lightning's other lines still come
    assert not any("litlogger" in m for m in messages)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        build_trainer(TrainerParams(), logger=False, enable_progress_bar=False)
        _tree_flatten({"loss": torch.ones(1)})  # what every validation step does
        warnings.warn("another deprecation stays visible", FutureWarning, stacklevel=1)
    texts = [str(w.message) for w in caught]
    assert not any("LeafSpec" in t for t in texts)
    assert "another deprecation stays visible" in texts
