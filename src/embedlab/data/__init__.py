"""Manifest contract, datasets, samplers and sources."""

from embedlab.data.datasets import DatasetQueryGallery, DatasetWithLabels, load_image
from embedlab.data.manifest import Manifest, ManifestError, load_manifest

__all__ = [
    "DatasetQueryGallery",
    "DatasetWithLabels",
    "Manifest",
    "ManifestError",
    "load_image",
    "load_manifest",
]
