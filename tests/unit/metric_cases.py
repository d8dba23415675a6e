"""Helpers shared by the metric tests: batches and a warning-free compute."""

from __future__ import annotations

import warnings

import torch

from embedlab.metrics import EmbeddingMetrics


def compute_quietly(metric: EmbeddingMetrics, batch: dict) -> dict:
    metric.setup(num_samples=len(batch["labels"]))
    metric.update_data(batch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return metric.compute_metrics()


def random_batch(n: int, dim: int, n_labels: int, seed: int, split: bool) -> dict:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, n_labels, (n,), generator=generator)
    centres = torch.randn(n_labels, dim, generator=generator)
    x = centres[labels] + 1.5 * torch.randn(n, dim, generator=generator)
    is_query = torch.arange(n) < n // 3 if split else torch.ones(n, dtype=torch.bool)
    is_gallery = ~is_query if split else torch.ones(n, dtype=torch.bool)
    return {
        "embeddings": x,
        "labels": labels,
        "is_query": is_query,
        "is_gallery": is_gallery,
        "categories": [f"c{int(v) % 3}" for v in labels],
    }


# ---------------------------------------------------------------- map@R, r_precision
