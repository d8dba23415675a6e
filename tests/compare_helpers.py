"""Run folders for the ``embedlab compare`` tests, made the way the pipeline makes them.

A run folder holds ``data/prepared/`` (a manifest and small PNG images, one colour per
label), ``params.yaml`` and ``reports/per_query.csv`` + ``reports/topk.csv`` computed by
:class:`EmbeddingMetrics` from given embeddings, with validate's column layout.
"""

from __future__ import annotations

import shutil
import subprocess
import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from PIL import Image

from embedlab.compare.topk import topk_table
from embedlab.metrics import EmbeddingMetrics

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

LABEL_COLOURS = [(250, 200, 0), (0, 200, 220), (160, 60, 200), (120, 120, 40)]


def blobs(labels: Sequence[int], spread: float, seed: int) -> np.ndarray:
    """2-D embeddings: one centre per label, Gaussian noise of ``spread`` around it."""
    rng = np.random.default_rng(seed)
    centres = np.array([[np.cos(a), np.sin(a)] for a in np.linspace(0, 2 * np.pi, 9)[:-1]])
    return centres[np.asarray(labels) % 8] + rng.normal(0, spread, (len(labels), 2))


def write_images(
    root: Path, labels: Sequence[int], names: Sequence[str] | None = None
) -> list[str]:
    """``root/data/prepared/images/<name>`` and a manifest; returns the relative paths."""
    prepared = root / "data" / "prepared"
    (prepared / "images").mkdir(parents=True, exist_ok=True)
    paths = []
    for i, label in enumerate(labels):
        name = names[i] if names is not None else f"{i:03d}.png"
        colour = LABEL_COLOURS[label % len(LABEL_COLOURS)]
        Image.new("RGB", (12, 12), colour).save(prepared / "images" / name, format="PNG")
        paths.append(f"images/{name}")
    pd.DataFrame(
        {
            "label": list(labels),
            "path": paths,
            "split": "validation",
            "is_query": True,
            "is_gallery": True,
        }
    ).to_csv(prepared / "manifest.csv", index=False)
    return paths


def compute_metric(embeddings: np.ndarray, labels: Sequence[int], paths: Sequence[str]):
    metric = EmbeddingMetrics(extra_keys=("paths",), pcf_variance=())
    metric.update_data(
        {
            "embeddings": torch.as_tensor(embeddings, dtype=torch.float32),
            "labels": torch.as_tensor(list(labels)),
            "paths": list(paths),
        }
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metric.compute_metrics()
    return metric


def per_query_frame(
    metric: EmbeddingMetrics,
    labels: Sequence[int],
    paths: Sequence[str],
    shown_labels: Sequence[str] | None = None,
) -> pd.DataFrame:
    """validate's ``per_query_table`` for data whose row ids are the positions."""
    results = metric.results
    positions = results.query_positions[results.valid_queries].tolist()
    table = pd.DataFrame(
        {
            "row_id": positions,
            "path": [paths[p] for p in positions],
            "label": [shown_labels[p] if shown_labels else labels[p] for p in positions],
            "category": "",
        }
    )
    for name, per_k in metric.metrics_unreduced["OVERALL"].items():
        if isinstance(per_k, dict) and name != "pcf":
            for k, values in per_k.items():
                table[f"{name}@{k}"] = values.numpy()
    return table


def make_run(
    root: Path,
    embeddings: np.ndarray,
    labels: Sequence[int],
    params: dict | None = None,
    *,
    names: Sequence[str] | None = None,
    shown_labels: Sequence[str] | None = None,
    topk: bool = True,
) -> Path:
    """A run folder at ``root`` (see the module docstring)."""
    root.mkdir(parents=True, exist_ok=True)
    paths = write_images(root, labels, names)
    metric = compute_metric(embeddings, labels, paths)
    (root / "reports").mkdir(exist_ok=True)
    per_query_frame(metric, labels, paths, shown_labels).to_csv(
        root / "reports" / "per_query.csv", index=False
    )
    if topk:
        topk_table(metric.results, top_k=5).to_csv(root / "reports" / "topk.csv", index=False)
    (root / "params.yaml").write_text(yaml.safe_dump(params or {"seed": 0}))
    return root


def make_pair(tmp: Path, n_per_label: int = 10, n_labels: int = 4) -> tuple[Path, Path]:
    """Runs A (noisy embeddings) and B (tighter ones) of the same queries, lr 1e-3 vs 3e-3."""
    labels = [i % n_labels for i in range(n_per_label * n_labels)]
    a = make_run(
        tmp / "run-a",
        blobs(labels, 0.45, seed=1),
        labels,
        {"seed": 0, "train": {"optimizer": {"lr": 0.001}, "max_epochs": 3}},
    )
    b = make_run(
        tmp / "run-b",
        blobs(labels, 0.35, seed=2),
        labels,
        {"seed": 0, "train": {"optimizer": {"lr": 0.003}, "max_epochs": 3}},
    )
    return a, b


def chromium(
    args: Sequence[str], user_data: Path, timeout: int = 120
) -> subprocess.CompletedProcess:
    """Headless Chromium with everything that could reach a network switched off."""
    assert CHROMIUM is not None
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={user_data}",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


def make_seeds(
    tmp: Path, prefix: str, spread: float, seeds: Sequence[int], params: dict | None = None
) -> list[Path]:
    """Replicates of one configuration: a run folder per seed, the same queries, embeddings
    drawn with that seed (``<prefix>-s<seed>``, params ``{"seed": seed, **params}``)."""
    labels = [i % 4 for i in range(40)]
    return [
        make_run(
            tmp / f"{prefix}-s{seed}",
            blobs(labels, spread, seed=zlib.crc32(prefix.encode()) % 10_000 + seed),
            labels,
            {"seed": seed, **(params or {"train": {"max_epochs": 3}})},
        )
        for seed in seeds
    ]


# Simulated runs for the seed-aware test: run-level noise large next to query noise, as in
# the real Fashion-MNIST runs, where the spread between seeds exceeds the query noise.
SIM_QUERIES = 300
SIM_RUN_SD = 0.006  # sd of a run's mean from training (seed, batch order)
SIM_QUERY_SD = 0.02  # per-query noise of one run around the configuration's value


def simulate_groups(
    rng: np.random.Generator,
    k: int,
    shift: float,
    run_sd: tuple[float, float] = (SIM_RUN_SD, SIM_RUN_SD),
) -> list[np.ndarray]:
    """Two configurations of ``k`` runs each (``[queries, 1]`` values) on the same queries;
    B better by ``shift``; ``run_sd``: each configuration's spread of run means."""
    difficulty = rng.uniform(0.4, 1.0, SIM_QUERIES)
    return [
        (
            difficulty
            + shift * group
            + rng.normal(0.0, run_sd[group])
            + rng.normal(0.0, SIM_QUERY_SD, SIM_QUERIES)
        )[:, None]
        for group in (0, 1)
        for _ in range(k)
    ]


def seed_aware_p(runs: list[np.ndarray], k: int, seed: int, n_resamples: int) -> float:
    """p-value of the seed-aware test (two-level bootstrap, t) of group B (the last k)."""
    from embedlab.compare.twolevel import difference, resample_group_means

    draws = resample_group_means(runs, [0] * 2 * k, [0] * k + [1] * k, n_resamples, seed)
    means = np.array([r.mean(axis=0) for r in runs])
    return float(difference(draws, 0, 1, means[:k], means[k:]).p_value[0])


def query_only_rejects(runs: list[np.ndarray], k: int, seed: int, n_resamples: int) -> bool:
    """The query-level test of single runs applied to groups: a paired bootstrap of the
    per-query differences of the two groups' means (the runs taken as fixed)."""
    from embedlab.compare.stats import bootstrap_ci

    per_query = np.mean(runs[k:], axis=0) - np.mean(runs[:k], axis=0)
    lo, hi = bootstrap_ci(per_query, n_resamples, seed)[0]
    return bool(lo > 0 or hi < 0)
