"""What does the pipeline's training step cost against a bare PyTorch loop?

Both train the model of the repo's ``params.yaml`` (same initial weights, same loss and
miner, same optimizer) on the same batches: the default data (Fashion-MNIST), batches drawn
once by the pipeline's ``BalanceSampler`` and replayed from memory, so decoding is out of
both.

- pipeline: ``embedlab.stages.train``'s own builders: ``ExtractorModule`` in a Lightning
  ``Trainer`` with the stage's callbacks (per-epoch reseeding, the epoch loss, the
  epoch-end checkpoint written atomically), ``HubLogger`` to the trackers of
  ``tracking.loggers`` (default: TensorBoard) and the loss statistics logged every step;
- bare: ``for batch: loss = criterion(model(x), y); opt.zero_grad(); loss.backward();
  opt.step()``.

Rounds alternate (bare, pipeline, bare, ...) so both see the same machine load; the
figure is the median step of all pipeline rounds over the median of all bare rounds.

    .venv/bin/python tests/benchmarks/bench_train.py [--epochs 3] [--rounds 3]

Target: ``step ratio`` <= 1.15 with the default tracker.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("DVC_NO_ANALYTICS", "1")

import torch
from lightning.pytorch.callbacks import Callback

from embedlab.config import load_params
from embedlab.data.manifest import load_manifest
from embedlab.stages.common import MANIFEST
from embedlab.stages.prepare import run_prepare
from embedlab.stages.train import (
    build_callbacks,
    build_criterion,
    build_fit_trainer,
    build_model,
    build_module,
    build_optimizer,
    build_train_loader,
    class_indices,
)
from embedlab.tracking import open_trackers
from embedlab.tracking.lightning_logger import HubLogger

REPO = Path(__file__).resolve().parents[2]


class StepTimer(Callback):
    """Wall time from one batch start to the next: forward, backward, step, logging."""

    def __init__(self) -> None:
        self.starts: list[float] = []

    def on_train_batch_start(self, *args: Any) -> None:
        self.starts.append(time.perf_counter())

    def on_train_epoch_end(self, *args: Any) -> None:
        self.starts.append(float("nan"))  # the epoch boundary (checkpoint) is not a step

    def steps(self) -> list[float]:
        pairs = zip(self.starts, self.starts[1:], strict=False)
        return [b - a for a, b in pairs if a == a and b == b]  # drop NaN boundaries


class Replay(torch.utils.data.Dataset):
    """Pre-drawn batches, one per index (the loader's batch_size=None passes them as is)."""

    def __init__(self, batches: list[dict[str, Any]]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        return self.batches[idx]


def criterion_of(params: Any, model: torch.nn.Module, batches: list[dict]) -> torch.nn.Module:
    """The criterion of ``train.loss``, sized on the batches' classes and the model."""
    _, num_classes = class_indices(torch.cat([b["labels"] for b in batches]).numpy())
    return build_criterion(params, num_classes, model.feat_dim)


def bare_round(
    model: torch.nn.Module, params: Any, batches: list[dict], epochs: int
) -> list[float]:
    criterion = criterion_of(params, model, batches)
    optimizer = build_optimizer(params.train.optimizer, model.parameters())
    model.train()
    times = []
    for _ in range(epochs):
        for batch in batches:
            start = time.perf_counter()
            loss = criterion(model(batch["input_tensors"]), batch["labels"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            times.append(time.perf_counter() - start)
    return times


def pipeline_round(
    model: torch.nn.Module, params: Any, batches: list[dict], epochs: int, root: Path
) -> list[float]:
    timer = StepTimer()
    callbacks = build_callbacks(params, root, validation=None)  # validation is not a step
    callbacks.extra.append(timer)
    hub = open_trackers(params, root, stage="train")
    logger = HubLogger(hub)
    fit_params = params.model_copy(deep=True)
    fit_params.train.max_epochs = epochs
    fit_params.train.val_every_n_epochs = epochs + 1
    trainer = build_fit_trainer(fit_params, root, logger, callbacks)
    module = build_module(
        fit_params, model, criterion_of(params, model, batches), len(batches), None
    )
    loader = torch.utils.data.DataLoader(Replay(batches), batch_size=None, shuffle=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, loader)
    hub.finish()
    return timer.steps()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    params = load_params(REPO / "params.yaml")  # the default run: its data, model and loss
    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    os.chdir(work)
    run_prepare(params, work)
    torch.manual_seed(params.seed)
    initial = build_model(params)
    loader, _ = build_train_loader(params, load_manifest(work / MANIFEST), initial.preprocessing)
    batches = list(loader)
    bare: list[float] = []
    pipe: list[float] = []
    for round_number in range(args.rounds):
        bare += bare_round(copy.deepcopy(initial), params, batches, args.epochs)
        pipe += pipeline_round(
            copy.deepcopy(initial), params, batches, args.epochs, work / f"round{round_number}"
        )
    bare_median, pipe_median = statistics.median(bare), statistics.median(pipe)
    print(
        f"model {params.train.model.arch}, batch {len(batches[0]['labels'])}, "
        f"{len(batches)} batches x {args.epochs} epochs x {args.rounds} rounds, "
        f"trackers {params.tracking.loggers}, cpus {os.cpu_count()}"
    )
    print(f"bare loop      median step {bare_median * 1000:8.1f} ms  ({len(bare)} steps)")
    print(f"pipeline       median step {pipe_median * 1000:8.1f} ms  ({len(pipe)} steps)")
    print(f"step ratio {pipe_median / bare_median:.3f}  (target <= 1.15)")


if __name__ == "__main__":
    main()
