"""Draw docs/finetune_curve.png: cmc@1 and map@R per epoch of fine-tuning experiments.

    python docs/scripts/plot_finetune_curve.py ft-closed [more experiment names...]

Each name is a DVC experiment of this repo (``dvc exp run -n NAME ...``); its
``reports/plots/validation.json`` (one row per validated epoch, epoch 0 = the weights off
the shelf) is read from the experiment's git ref. The random-init default (``main``'s
committed ``reports/metrics.json``) and the raw-pixel kNN are drawn as dashed lines.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

METRICS = ("cmc@1", "map@R")


def git_json(rev: str, path: str) -> object:
    """A JSON file of the repository at ``rev``."""
    text = subprocess.run(
        ["git", "show", f"{rev}:{path}"], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(text)


def experiment_ref(name: str) -> str:
    """The git ref of DVC experiment ``name`` (the newest if several)."""
    refs = subprocess.run(
        ["git", "for-each-ref", "--sort=-creatordate", "--format=%(refname)", "refs/exps"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    for ref in refs:
        if ref.rsplit("/", 1)[-1] == name:
            return ref
    raise SystemExit(f"error: no DVC experiment named {name!r} (dvc exp show lists them)")


def main(names: list[str], out: Path, default_rev: str = "main") -> None:
    default = git_json(default_rev, "reports/metrics.json")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=120)
    for ax, metric in zip(axes, METRICS, strict=True):
        for name in names:
            rows = git_json(experiment_ref(name), "reports/plots/validation.json")
            epochs = [row["epoch"] for row in rows]
            values = [row[metric] for row in rows]
            ax.plot(epochs, values, marker="o", label=f"{name} (lite0, ImageNet init)")
            for x, y in zip(epochs, values, strict=True):
                ax.annotate(
                    f"{y:.3f}",
                    (x, y),
                    textcoords="offset points",
                    xytext=(0, 6),
                    ha="center",
                    fontsize=7,
                )
        ax.axhline(
            default[metric],
            linestyle="--",
            color="tab:green",
            label=f"random-init default, 20 epochs ({default[metric]:.3f})",
        )
        raw = default[f"baseline/raw_pixels/{metric}"]
        ax.axhline(raw, linestyle=":", color="grey", label=f"raw-pixel kNN ({raw:.3f})")
        ax.set_xlabel("epoch (0 = ImageNet weights off the shelf)")
        ax.set_ylabel(f"val/OVERALL/{metric}")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=7)
    fig.suptitle("Fine-tuning efficientnet-lite0 on Fashion-MNIST (closed set, 3,000 queries)")
    fig.tight_layout()
    fig.savefig(out)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    main(sys.argv[1:], Path("docs/finetune_curve.png"))
