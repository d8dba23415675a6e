"""Re-ranking gain on the default data's validation split, raw-pixel embeddings.

Usage::

    python tests/benchmarks/rerank_gain.py

The digits source's open-set validation split (labels 5-9, 896 images of 16x16, every
image query and gallery) embedded as raw pixels (the raw-pixel baseline every report
carries), scored plain, with average query expansion for several ``aqe_k`` and with k-reciprocal
re-ranking at the default parameters.
"""

from __future__ import annotations

import warnings

import torch

from embedlab.data.sources.digits import digits_images
from embedlab.metrics import EmbeddingMetrics


def main() -> None:
    images, labels = digits_images(16)
    labels = torch.as_tensor(labels)
    validation = labels >= 5
    pixels = torch.as_tensor(images)[validation].reshape(int(validation.sum()), -1).float()
    for distance in ("euclidean", "cosine"):
        for aqe_k in (1, 2, 3, 5):
            metric = EmbeddingMetrics(
                pcf_variance=(), r_metrics=True, postprocess="aqe", aqe_k=aqe_k, distance=distance
            ).setup()
            metric.update_data({"embeddings": pixels, "labels": labels[validation]})
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                o = metric.compute_metrics()["OVERALL"]
            if aqe_k == 1:
                kr = EmbeddingMetrics(
                    pcf_variance=(), r_metrics=True, postprocess="k_reciprocal", distance=distance
                ).setup()
                kr.update_data({"embeddings": pixels, "labels": labels[validation]})
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    r = kr.compute_metrics()["OVERALL"]
                print(
                    f"{distance:>9} k_reciprocal (k1=20, k2=6, lambda=0.3, top 100): cmc@1 "
                    f"{r['cmc'][1]:.4f} -> {r['k_reciprocal/cmc'][1]:.4f}"
                    f"  map@5 {r['map'][5]:.4f} -> {r['k_reciprocal/map'][5]:.4f}"
                    f"  map@R {r['map@R']:.4f} -> {r['k_reciprocal/map@R']:.4f}"
                    f"  r_precision {r['r_precision']:.4f} -> {r['k_reciprocal/r_precision']:.4f}",
                    flush=True,
                )
            print(
                f"{distance:>9} aqe_k={aqe_k}: cmc@1 {o['cmc'][1]:.4f} -> {o['aqe/cmc'][1]:.4f}"
                f"  map@5 {o['map'][5]:.4f} -> {o['aqe/map'][5]:.4f}"
                f"  map@R {o['map@R']:.4f} -> {o['aqe/map@R']:.4f}"
                f"  r_precision {o['r_precision']:.4f} -> {o['aqe/r_precision']:.4f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
