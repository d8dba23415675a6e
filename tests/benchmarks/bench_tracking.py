"""Does logging slow training? Median step time with all five trackers vs none.

The pipeline's own step, built by ``embedlab.stages.train`` from the repo's ``params.yaml``
(``build_model``: its arch at its ``input_size``; ``build_criterion``: its loss and miner
with the miner's triplet cap; ``build_module``: its optimizer with weight decay and
schedule; ``build_fit_trainer``: its Trainer settings and callbacks), on random batches
of its ``n_labels x n_instances`` shape, logging through ``HubLogger`` every step. The
same batches are replayed for each configuration, and the configurations alternate, and
so does which goes first in a round (none then all, all then none, ...), so both see the
same machine load and neither always runs first. Offline modes throughout
(W&B offline, Neptune offline, MLflow sqlite).

    .venv/bin/python tests/benchmarks/bench_tracking.py [--steps 60] [--rounds 4] [--threads N]

Target: ratio <= 1.10.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from embedlab.config import Params, load_params
from embedlab.stages.train import (
    build_callbacks,
    build_criterion,
    build_fit_trainer,
    build_model,
    build_module,
)
from embedlab.tracking import open_trackers
from embedlab.tracking.base import TrackerHub
from embedlab.tracking.lightning_logger import HubLogger

ALL = ["tensorboard", "mlflow", "wandb", "neptune", "dvclive"]
WARMUP = 5


class StepTimer(Callback):
    """Wall time from one batch start to the next: forward, backward, step and logging
    (the last one to the end of training: it includes the epoch-end checkpoint)."""

    def __init__(self) -> None:
        self.starts: list[float] = []

    def on_train_batch_start(self, *args: Any) -> None:
        self.starts.append(time.perf_counter())

    def on_train_end(self, *args: Any) -> None:
        self.starts.append(time.perf_counter())

    @property
    def steps(self) -> list[float]:
        times = [b - a for a, b in zip(self.starts, self.starts[1:], strict=False)]
        return times[WARMUP:]


REPO_PARAMS = load_params(Path(__file__).resolve().parents[2] / "params.yaml")


def bench_params(trackers: list[str]) -> Params:
    """The repo's params with one epoch, no validation and ``trackers`` (offline)."""
    params = REPO_PARAMS.model_copy(deep=True)
    params.train.max_epochs = 1
    params.train.val_every_n_epochs = 2
    params.tracking.loggers = trackers
    params.tracking.neptune.mode = "offline"
    return params


def make_batches(n: int) -> list[dict[str, Any]]:
    """Random images at the model's input size, labels as the sampler draws them."""
    gen = torch.Generator().manual_seed(0)
    sampler = REPO_PARAMS.train.sampler
    labels = torch.arange(sampler.n_labels).repeat_interleave(sampler.n_instances)
    shape = build_model(REPO_PARAMS).preprocessing["input_size"]
    return [
        {"input_tensors": torch.randn(len(labels), *shape, generator=gen), "labels": labels}
        for _ in range(n)
    ]


def describe(batches: list[dict[str, Any]]) -> str:
    """What is timed, read back from the objects the pipeline builds."""
    module = build_module(REPO_PARAMS, *pipeline_parts(REPO_PARAMS), 1, None)
    optimizer = module.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    group = optimizer.param_groups[0]
    miner = getattr(module.criterion, "miner", None)
    cap = getattr(miner, "max_output_triplets", None)
    return (
        f"{REPO_PARAMS.train.model.arch}, batch {tuple(batches[0]['input_tensors'].shape)}, "
        f"{type(module.criterion).__name__} + {type(miner).__name__}(max_output_triplets={cap}), "
        f"{type(optimizer).__name__}(lr={group['lr']:g}, weight_decay={group['weight_decay']:g})"
    )


def pipeline_parts(params: Params) -> tuple[torch.nn.Module, torch.nn.Module]:
    L.seed_everything(params.seed, verbose=False)
    model = build_model(params)
    n_labels = params.train.sampler.n_labels
    return model, build_criterion(params, n_labels, model.feat_dim)


def train_once(
    batches: list[dict[str, Any]], params: Params, hub: TrackerHub, root: Path
) -> list[float]:
    model, criterion = pipeline_parts(params)
    module = build_module(params, model, criterion, len(batches), None)
    callbacks = build_callbacks(params, root, validation=None)
    timer = StepTimer()
    callbacks.extra.append(timer)
    trainer = build_fit_trainer(params, root, HubLogger(hub), callbacks)
    loader = torch.utils.data.DataLoader(batches, batch_size=None, shuffle=False)
    trainer.fit(module, loader)
    return timer.steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    batches = make_batches(args.steps + WARMUP)
    times: dict[str, list[float]] = {"none": [], "all five": []}
    cpu = {"none": 0.0, "all five": 0.0}  # CPU seconds of this process (all its threads)
    finish_s: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        params = bench_params(ALL)

        def without() -> None:
            started_cpu = time.process_time()
            times["none"] += train_once(batches, bench_params([]), TrackerHub([]), root)
            cpu["none"] += time.process_time() - started_cpu

        def with_all() -> None:
            hub = open_trackers(params, root, stage="train")
            if hub.failed:
                raise SystemExit(f"a tracker failed to start: {hub.failed}")
            try:
                started_cpu = time.process_time()
                times["all five"] += train_once(batches, params, hub, root)
                cpu["all five"] += time.process_time() - started_cpu
            finally:
                started = time.perf_counter()
                hub.finish()
                finish_s.append(time.perf_counter() - started)
            if hub.failed:
                raise SystemExit(f"a tracker failed: {hub.failed}")

        for number in range(args.rounds):  # who goes first alternates too
            for run in (without, with_all) if number % 2 == 0 else (with_all, without):
                run()
    none, full = statistics.median(times["none"]), statistics.median(times["all five"])
    print(f"the pipeline's step: {describe(batches)}, torch threads {torch.get_num_threads()}")
    print(f"steps per config: {len(times['none'])} ({args.rounds} rounds x {args.steps})")
    print(f"median step, no tracker:        {none * 1000:8.1f} ms")
    print(f"median step, all five trackers: {full * 1000:8.1f} ms  ({', '.join(ALL)})")
    print(f"ratio: {full / none:.3f}  (target <= 1.10)")
    print(
        f"CPU seconds of the fits: {cpu['none']:.1f} without, {cpu['all five']:.1f} with "
        f"(ratio {cpu['all five'] / cpu['none']:.3f}; W&B's service process not counted), "
        f"load average {os.getloadavg()[0]:.1f} at the end"
    )
    print(f"finish (flush + close), longest: {max(finish_s):.1f} s")


if __name__ == "__main__":
    main()
