"""Images per second on a GPU: the pipeline's training step and its embedding pass, per AMP mode.

For each precision (``32-true``, ``bf16-mixed``, ``16-mixed``) and memory format
(contiguous, ``train.channels_last``), on the model of the repo's ``params.yaml`` at its
input size, through the pipeline's own code:

- train: ``ExtractorModule.training_step`` run by the stage's Trainer
  (``embedlab.stages.train``: ``build_model``, ``build_criterion``, ``build_module``,
  ``build_fit_trainer`` with ``train.trainer`` set to one GPU and the precision), its
  optimizer step and epoch-end checkpoint included, on pre-drawn random class-balanced
  batches of the ``n_labels x n_instances`` shape (no decoding: the GPU's work); the
  median step between two batch starts, synchronised, after warm-up;
- embed: ``embed_dataset`` (decode PNG files, uint8 batch -> normalise on the device ->
  forward) over images written at the model's input size, under ``torch.autocast`` for
  the mixed precisions (the stages embed in float32: that row is the pipeline's).

    .venv/bin/python tests/benchmarks/bench_gpu.py [--steps 30] [--images 8192] [--batch-size 256]

Without a CUDA device it stops with one line (``error: ...``, exit 2) and measures nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback
from PIL import Image

from embedlab.config import Params, load_params
from embedlab.data.datasets import DatasetWithLabels
from embedlab.data.transforms import eval_transform
from embedlab.embedding import embed_dataset
from embedlab.stages.train import (
    build_callbacks,
    build_criterion,
    build_fit_trainer,
    build_model,
    build_module,
)
from embedlab.tracking.base import TrackerHub
from embedlab.tracking.lightning_logger import HubLogger

REPO = Path(__file__).resolve().parents[2]
PRECISIONS = {"32-true": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}
WARMUP = 3


class SyncedStepTimer(Callback):
    """Batch-start times after a device sync: the steps' wall time on the GPU."""

    def __init__(self) -> None:
        self.starts: list[float] = []

    def on_train_batch_start(self, *args: Any) -> None:
        torch.cuda.synchronize()
        self.starts.append(time.perf_counter())

    def median_step(self) -> float:
        steps = [b - a for a, b in zip(self.starts, self.starts[1:], strict=False)]
        return statistics.median(steps[WARMUP:])


def gpu_params(precision: str, channels_last: bool) -> Params:
    """The repo's params on one GPU at ``precision``: one epoch, no validation."""
    params = load_params(REPO / "params.yaml")
    trainer = params.train.trainer
    trainer.accelerator, trainer.devices, trainer.strategy = "gpu", 1, "auto"
    trainer.num_nodes, trainer.precision = 1, precision
    params.train.channels_last = channels_last
    params.train.max_epochs = 1
    params.train.val_every_n_epochs = 2
    return params


def train_images_per_second(params: Params, batches: list[dict], root: Path) -> float:
    """The stage's Trainer fitting the stage's module on ``batches``, timed per step."""
    torch.manual_seed(params.seed)
    model = build_model(params)
    criterion = build_criterion(params, params.train.sampler.n_labels, model.feat_dim)
    module = build_module(params, model, criterion, len(batches), None)
    callbacks = build_callbacks(params, root, validation=None)
    timer = SyncedStepTimer()
    callbacks.extra.append(timer)
    trainer = build_fit_trainer(params, root, HubLogger(TrackerHub([])), callbacks)
    trainer.fit(module, torch.utils.data.DataLoader(batches, batch_size=None, shuffle=False))
    return len(batches[0]["labels"]) / timer.median_step()


def image_folder(root: Path, n: int, side: int) -> pd.DataFrame:
    """``n`` random RGB PNG files of ``side`` px, as a manifest frame."""
    rng = np.random.default_rng(0)
    for i in range(n):
        pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"{i}.png")
    return pd.DataFrame({"label": np.arange(n) % 10, "path": [f"{i}.png" for i in range(n)]})


def embed_images_per_second(
    params: Params, images: pd.DataFrame, root: Path, batch_size: int, dtype: Any
) -> float:
    """``embed_dataset`` on the GPU over the files (autocast for a mixed precision)."""
    model = build_model(params).cuda()
    if params.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    transform = eval_transform(model.preprocessing)
    dataset = DatasetWithLabels(images, root, transform)
    autocast = torch.autocast("cuda", dtype=dtype) if dtype else contextlib.nullcontext()
    with autocast:
        embed_dataset(model, DatasetWithLabels(images[:batch_size], root, transform), batch_size)
        torch.cuda.synchronize()
        started = time.perf_counter()
        embed_dataset(model, dataset, batch_size)
        torch.cuda.synchronize()
    return len(images) / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--images", type=int, default=8192)
    parser.add_argument("--batch-size", type=int, default=256, help="embed batch size")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        built = f"CUDA {torch.version.cuda}" if torch.version.cuda else "no CUDA support"
        print(
            f"error: bench_gpu needs a CUDA device; torch.cuda.is_available() is False "
            f"(torch {torch.__version__}, built with {built}): nothing measured",
            file=sys.stderr,
        )
        return 2
    warnings.filterwarnings("ignore")
    torch.backends.cudnn.benchmark = True
    params = load_params(REPO / "params.yaml")
    shape = build_model(params).preprocessing["input_size"]
    sampler = params.train.sampler
    labels = torch.arange(sampler.n_labels).repeat_interleave(sampler.n_instances)
    gen = torch.Generator().manual_seed(0)
    batches = [
        {"input_tensors": torch.randn(len(labels), *shape, generator=gen), "labels": labels}
        for _ in range(args.steps + WARMUP + 1)
    ]
    work = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    images = image_folder(work, args.images, shape[-1])
    print(
        f"{torch.cuda.get_device_name()}: {params.train.model.arch} at {shape[1]}x{shape[2]}, "
        f"train batch {len(labels)} ({args.steps} timed steps), "
        f"embed {args.images} PNG files in batches of {args.batch_size}"
    )
    print(f"  {'precision':<11} {'layout':<14} {'train img/s':>12} {'embed img/s':>12}")
    for precision, dtype in PRECISIONS.items():
        for channels_last in (False, True):
            run = gpu_params(precision, channels_last)
            root = work / f"{precision}-{channels_last}"
            train = train_images_per_second(run, batches, root)
            embed = embed_images_per_second(run, images, work, args.batch_size, dtype)
            name = "channels_last" if channels_last else "contiguous"
            print(f"  {precision:<11} {name:<14} {train:>12.0f} {embed:>12.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
