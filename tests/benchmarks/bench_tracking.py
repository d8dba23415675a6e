"""Does logging slow training? Median step time with all five trackers vs none.

A real ``ExtractorModule`` step (the model, loss, miner and batch shape of the repo's
``params.yaml``) trained by Lightning,
logging through ``HubLogger`` every step. The same batches are replayed for each
configuration, and the configurations alternate (none, all, none, all, ...) so both see the
same machine load. Offline modes throughout (W&B offline, Neptune offline, MLflow sqlite).

    .venv/bin/python tests/benchmarks/bench_tracking.py [--steps 60] [--rounds 3]

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

from embedlab.config import load_params, parse_params
from embedlab.lightning import ExtractorModule
from embedlab.losses import TripletLossWithMiner
from embedlab.miners import build_miner
from embedlab.models import TimmExtractor
from embedlab.tracking import open_trackers
from embedlab.tracking.base import TrackerHub
from embedlab.tracking.lightning_logger import HubLogger

ALL = ["tensorboard", "mlflow", "wandb", "neptune", "dvclive"]
WARMUP = 5


class StepTimer(Callback):
    """Wall time from one batch start to the next: forward, backward, step and logging."""

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


REPO_PARAMS = load_params(Path(__file__).resolve().parents[2] / "params.yaml").train


def build_model() -> TimmExtractor:
    cfg = REPO_PARAMS.model
    return TimmExtractor(cfg.arch, None, cfg.normalise_features, **cfg.timm_kwargs)


def make_batches(n: int) -> list[dict[str, Any]]:
    gen = torch.Generator().manual_seed(0)
    sampler = REPO_PARAMS.sampler
    labels = torch.arange(sampler.n_labels).repeat_interleave(sampler.n_instances)
    shape = build_model().preprocessing["input_size"]
    return [
        {"input_tensors": torch.randn(len(labels), *shape, generator=gen), "labels": labels}
        for _ in range(n)
    ]


def train_once(batches: list[dict[str, Any]], hub: TrackerHub, root: Path) -> list[float]:
    L.seed_everything(0, verbose=False)
    model = build_model()
    criterion = TripletLossWithMiner(
        REPO_PARAMS.loss.triplet.margin, miner=build_miner(REPO_PARAMS.miner.name), need_logs=True
    )
    module = ExtractorModule(model, criterion, lambda ps: torch.optim.AdamW(ps, lr=1e-3))
    timer = StepTimer()
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=HubLogger(hub),
        callbacks=[timer],
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(root),
    )
    loader = torch.utils.data.DataLoader(batches, batch_size=None, shuffle=False)
    trainer.fit(module, loader)
    return timer.steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(max(1, (os.cpu_count() or 1)))
    batches = make_batches(args.steps + WARMUP)
    times: dict[str, list[float]] = {"none": [], "all five": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        params = parse_params({"tracking": {"loggers": ALL, "neptune": {"mode": "offline"}}})
        for _ in range(args.rounds):
            times["none"] += train_once(batches, TrackerHub([]), root)
            hub = open_trackers(params, root, stage="train")
            if hub.failed:
                raise SystemExit(f"a tracker failed to start: {hub.failed}")
            try:
                times["all five"] += train_once(batches, hub, root)
            finally:
                started = time.perf_counter()
                hub.finish()
                finish_s = time.perf_counter() - started
            if hub.failed:
                raise SystemExit(f"a tracker failed: {hub.failed}")
    none, full = statistics.median(times["none"]), statistics.median(times["all five"])
    print(f"steps per config: {len(times['none'])} ({args.rounds} rounds x {args.steps})")
    print(f"median step, no tracker:        {none * 1000:8.1f} ms")
    print(f"median step, all five trackers: {full * 1000:8.1f} ms  ({', '.join(ALL)})")
    print(f"ratio: {full / none:.3f}  (target <= 1.10)")
    print(f"finish (flush + close, last round): {finish_s:.1f} s")


if __name__ == "__main__":
    main()
