"""Draw docs/cmc_curve.png: val/OVERALL/cmc@1 over the epochs of a run, from TensorBoard.

    python docs/scripts/plot_cmc_curve.py [REPO]   # after `dvc repro` in REPO (default: .)

The raw-pixel baseline (reports/metrics.json) is drawn as a dashed line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def main(repo: Path, out: Path) -> None:
    run_id = json.loads((repo / "reports" / "run.json").read_text())["run_ids"]["tensorboard"]
    acc = EventAccumulator(
        str(repo / "logs" / "tensorboard" / run_id), size_guidance={"scalars": 0}
    )
    acc.Reload()
    points = acc.Scalars("val/OVERALL/cmc@1")
    train = json.loads((repo / "reports" / "train.json").read_text())
    steps_per_epoch = train["global_step"] / train["epochs"]
    seen: dict[float, float] = {}
    for event in points:  # the validate stage logs the final point again, at the last step
        seen[event.step / steps_per_epoch] = event.value
    epochs, values = zip(*sorted(seen.items()), strict=True)
    metrics = json.loads((repo / "reports" / "metrics.json").read_text())
    baseline = metrics["baseline"]["raw_pixels"]["OVERALL"]["cmc"]["1"]
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)
    ax.plot(epochs, values, marker="o", label="resnet10t (default run)")
    ax.axhline(baseline, linestyle="--", color="grey", label=f"raw-pixel kNN ({baseline:.3f})")
    for x, y in zip(epochs, values, strict=True):
        ax.annotate(f"{y:.3f}", (x, y), textcoords="offset points", xytext=(0, 6), ha="center")
    ax.set_xlabel("epoch")
    ax.set_ylabel("val/OVERALL/cmc@1")
    ax.set_title("Fashion-MNIST, 3,000 validation queries")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out)


if __name__ == "__main__":
    repo = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".")
    main(repo, Path(sys.argv[2]) if len(sys.argv) > 2 else Path("docs/cmc_curve.png"))
