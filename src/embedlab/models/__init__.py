"""Extractors built on timm."""

from embedlab.models.extractor import (
    VIT_ARCHS,
    ZOO,
    TimmExtractor,
    ViTExtractor,
    load_extractor,
    resolve_arch,
    save_extractor,
)

__all__ = [
    "VIT_ARCHS",
    "ZOO",
    "TimmExtractor",
    "ViTExtractor",
    "load_extractor",
    "resolve_arch",
    "save_extractor",
]
