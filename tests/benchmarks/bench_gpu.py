"""Images per second on a GPU: training steps and the embedding pass, with and without AMP.

For each precision (``32-true``, ``bf16-mixed``, ``16-mixed``) and memory format
(contiguous, channels-last), on the model of the repo's ``params.yaml`` at its input size:

- train: ``ExtractorModule.training_step`` + backward + optimizer step on random
  class-balanced batches (the stage's criterion), timed after warm-up, synchronised;
- embed: ``embed_dataset``'s per-batch work (uint8 batch -> normalise on the device ->
  forward), under ``torch.autocast`` for the mixed precisions.

    .venv/bin/python tests/benchmarks/bench_gpu.py [--steps 30] [--batch-size 256]

Without a CUDA device it says so and measures nothing (exit 0).
"""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path

import torch

from embedlab.config import load_params
from embedlab.data.transforms import eval_transform, split_transform
from embedlab.stages.train import build_criterion, build_model, build_optimizer

REPO = Path(__file__).resolve().parents[2]
PRECISIONS = {"32-true": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def _timed(fn, steps: int) -> float:
    for _ in range(3):  # warm-up: cuDNN autotune, allocator
        fn()
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - started) / steps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("bench_gpu: no CUDA device here: nothing measured")
        return 0
    params = load_params(REPO / "params.yaml")
    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    probe = build_model(params)
    _, height, width = probe.preprocessing["input_size"]
    n_labels = params.train.sampler.n_labels
    n_instances = max(2, args.batch_size // n_labels)
    labels = torch.arange(n_labels).repeat_interleave(n_instances).to(device)
    batch = len(labels)
    images = torch.rand(batch, 3, height, width, device=device)
    pixels = torch.randint(0, 256, (batch, 3, height, width), dtype=torch.uint8).pin_memory()
    _, normalise = split_transform(eval_transform(probe.preprocessing))
    print(
        f"{torch.cuda.get_device_name()}: {params.train.model.arch} at {height}x{width}, "
        f"batch {batch}, {args.steps} timed steps"
    )
    print(f"  {'precision':<11} {'layout':<14} {'train img/s':>12} {'embed img/s':>12}")
    for precision, dtype in PRECISIONS.items():
        for channels_last in (False, True):
            model = build_model(params).to(device)
            layout = torch.channels_last if channels_last else torch.contiguous_format
            model = model.to(memory_format=layout)
            criterion = build_criterion(params, n_labels, model.feat_dim).to(device)
            optimizer = build_optimizer(params.train.optimizer, model.parameters())
            scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)

            def autocast(dtype=dtype):
                if dtype is None:
                    return contextlib.nullcontext()
                return torch.autocast("cuda", dtype=dtype)

            def train_step(model=model, criterion=criterion, optimizer=optimizer,
                           scaler=scaler, layout=layout, autocast=autocast) -> None:  # fmt: skip
                with autocast():
                    loss = criterion(model(images.contiguous(memory_format=layout)), labels)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()

            def embed_step(model=model, layout=layout, autocast=autocast) -> None:
                with torch.inference_mode(), autocast():
                    x = normalise(pixels.to(device, non_blocking=True))
                    model(x.contiguous(memory_format=layout)).float()

            model.train()
            train_s = _timed(train_step, args.steps)
            model.eval()
            embed_s = _timed(embed_step, args.steps)
            name = "channels_last" if channels_last else "contiguous"
            print(f"  {precision:<11} {name:<14} {batch / train_s:>12.0f} {batch / embed_s:>12.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
