"""Manifest contract, datasets, samplers and sources."""

from embedlab.data.datasets import DatasetQueryGallery, DatasetWithLabels, load_image
from embedlab.data.manifest import Manifest, ManifestError, load_manifest
from embedlab.data.samplers import BalanceSampler

__all__ = [
    "BalanceSampler",
    "DatasetQueryGallery",
    "DatasetWithLabels",
    "Manifest",
    "ManifestError",
    "load_image",
    "load_manifest",
]
