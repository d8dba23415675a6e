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

Rounds alternate, and so does who goes first in a round (bare then pipeline, pipeline
then bare, ...), so both see the same machine load and neither always runs on a warm
allocator. Three figures:

- ``epoch ratio`` (the headline): the median wall time of a whole epoch, every step
  included, and for the pipeline everything Lightning does around them (the epoch-end
  checkpoint, the loss callback, the reseeding, the loader), over the bare loop's epoch;
- ``epoch CPU ratio``: the same in CPU seconds of this process (all its threads, the
  trackers' included): on a machine shared with other jobs, the fair measure of the work;
- ``step ratio``: the median of the steps between two batch starts within an epoch; it
  leaves out each epoch's last step and epoch-end work, which the script prints apart
  (``epoch end``: the pipeline's last step + checkpoint, against the bare last step).

Validation is not timed (it is not a training step; ``bench_metrics`` and
``bench_embed`` time it). On a 2-core machine shared with other jobs wall times swing
with the load, even medians: a wall ratio within several per cent of 1 is noise, and one
below 1 (this script once printed 0.954 for steps alone) is not a pipeline faster than
the work it contains; read the CPU ratio there.

    .venv/bin/python tests/benchmarks/bench_train.py [--epochs 3] [--rounds 4] [--threads N]

Target: ``epoch ratio`` <= 1.15 with the default tracker.
"""

from __future__ import annotations

import argparse
import copy
import functools
import itertools
import os
import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("DVC_NO_ANALYTICS", "1")

import torch
from lightning.pytorch.callbacks import Callback

from embedlab.config import load_params
from embedlab.data.manifest import load_manifest
from embedlab.lightning.checkpoint import LAST_CHECKPOINT
from embedlab.stages.common import CHECKPOINTS_DIR, MANIFEST
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


@dataclass
class Timings:
    """One round's steps (batch start to next batch start, within an epoch), its epochs
    (whole, from the epoch's start to the next one's) and its epoch ends (last batch start
    to the next epoch's start: the last step, and for the pipeline the checkpoint)."""

    steps: list[float] = field(default_factory=list)
    epochs: list[float] = field(default_factory=list)
    ends: list[float] = field(default_factory=list)
    cpu_epochs: list[float] = field(default_factory=list)
    """CPU seconds of this process (all its threads) per epoch: the work done, which other
    jobs on a shared machine do not inflate as they do wall time."""

    def add(self, other: Timings) -> None:
        self.steps += other.steps
        self.epochs += other.epochs
        self.ends += other.ends
        self.cpu_epochs += other.cpu_epochs


class StepTimer(Callback):
    """The pipeline's :class:`Timings`, from Lightning's hooks.

    An epoch runs from its ``on_train_epoch_start`` to the next epoch's (or
    ``on_train_end``), so the checkpoint written in ``on_train_epoch_end`` (Lightning runs
    checkpoint callbacks last) is inside it.
    """

    def __init__(self) -> None:
        self.timings = Timings()
        self.epoch_start: float | None = None
        self.epoch_cpu_start = 0.0
        self.batch_starts: list[float] = []

    def on_train_epoch_start(self, *args: Any) -> None:
        self._close_epoch()
        self.epoch_start = time.perf_counter()
        self.epoch_cpu_start = time.process_time()
        self.batch_starts = []

    def on_train_batch_start(self, *args: Any) -> None:
        self.batch_starts.append(time.perf_counter())

    def on_train_end(self, *args: Any) -> None:
        self._close_epoch()

    def _close_epoch(self) -> None:
        if self.epoch_start is None:
            return
        now, starts = time.perf_counter(), self.batch_starts
        self.timings.steps += [b - a for a, b in itertools.pairwise(starts)]
        self.timings.epochs.append(now - self.epoch_start)
        self.timings.cpu_epochs.append(time.process_time() - self.epoch_cpu_start)
        self.timings.ends.append(now - starts[-1])
        self.epoch_start = None


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


def bare_round(model: torch.nn.Module, params: Any, batches: list[dict], epochs: int) -> Timings:
    criterion = criterion_of(params, model, batches)
    optimizer = build_optimizer(params.train.optimizer, model.parameters())
    model.train()
    timings = Timings()
    for _ in range(epochs):
        epoch_start, epoch_cpu_start = time.perf_counter(), time.process_time()
        steps = []
        for batch in batches:
            start = time.perf_counter()
            loss = criterion(model(batch["input_tensors"]), batch["labels"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps.append(time.perf_counter() - start)
        timings.epochs.append(time.perf_counter() - epoch_start)
        timings.cpu_epochs.append(time.process_time() - epoch_cpu_start)
        timings.steps += steps[:-1]  # as the pipeline's: the last step is the epoch end's
        timings.ends.append(steps[-1])
    return timings


def pipeline_round(
    model: torch.nn.Module, params: Any, batches: list[dict], epochs: int, root: Path
) -> Timings:
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
    if not (root / CHECKPOINTS_DIR / LAST_CHECKPOINT).is_file():
        raise SystemExit("bench_train: the pipeline round wrote no checkpoint")
    return timer.timings


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:8.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    params = load_params(REPO / "params.yaml")  # the default run: its data, model and loss
    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    os.chdir(work)
    run_prepare(params, work)
    torch.manual_seed(params.seed)
    initial = build_model(params)
    loader, _ = build_train_loader(params, load_manifest(work / MANIFEST), initial.preprocessing)
    batches = list(loader)
    bare, pipe = Timings(), Timings()
    for number in range(args.rounds):
        runs = [
            (bare, bare_round),
            (pipe, functools.partial(pipeline_round, root=work / f"round{number}")),
        ]
        for into, run in runs if number % 2 == 0 else runs[::-1]:
            into.add(run(copy.deepcopy(initial), params, batches, args.epochs))
    cfg = params.train
    print(
        f"model {cfg.model.arch} at {cfg.model.input_size} px, batch {len(batches[0]['labels'])}, "
        f"{len(batches)} batches x {args.epochs} epochs x {args.rounds} rounds, "
        f"trackers {params.tracking.loggers}, torch threads {torch.get_num_threads()}, "
        f"cpus {os.cpu_count()}"
    )
    print(f"{'':14} {'epoch':>11} {'epoch CPU':>11} {'step':>11} {'epoch end':>11}")
    for name, t in (("bare loop", bare), ("pipeline", pipe)):
        print(
            f"{name:14} {ms(t.epochs)} {ms(t.cpu_epochs)} {ms(t.steps)} {ms(t.ends)}"
            f"  ({len(t.epochs)} epochs)"
        )

    def ratio(values: str) -> float:
        return statistics.median(getattr(pipe, values)) / statistics.median(getattr(bare, values))

    print(
        f"epoch ratio     {ratio('epochs'):.3f}  (wall: every step, the checkpoint; target <= 1.15)"
    )
    print(f"epoch CPU ratio {ratio('cpu_epochs'):.3f}  (the same, CPU seconds of this process)")
    print(f"step ratio      {ratio('steps'):.3f}  (wall, steps within an epoch; epoch ends apart)")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
