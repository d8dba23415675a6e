"""Manifest contract, datasets, samplers, loaders and sources.

Names are imported lazily (``from embedlab.data import BalanceSampler`` works), so a
module that needs only the manifest does not load the datasets and samplers too.
"""

from __future__ import annotations

from embedlab.lazy import lazy_exports

_PUBLIC = {
    "BalanceSampler": "embedlab.data.samplers",
    "DatasetQueryGallery": "embedlab.data.datasets",
    "DatasetWithLabels": "embedlab.data.datasets",
    "InferenceImages": "embedlab.data.datasets",
    "Manifest": "embedlab.data.manifest",
    "ManifestError": "embedlab.data.manifest",
    "load_image": "embedlab.data.datasets",
    "load_manifest": "embedlab.data.manifest",
}

__all__ = sorted(_PUBLIC)

__getattr__ = lazy_exports(__name__, _PUBLIC)
