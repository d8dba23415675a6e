"""Data sources: each turns some input into image files + a manifest DataFrame.

A source is a function ``prepare(cfg: PrepareParams, out_dir: Path) -> PreparedData``.
:data:`embedlab.registries.SOURCES` maps ``prepare.source`` names to them; modules are
imported lazily.
Sources that read a native layout report a missing or malformed input file as an
:class:`~embedlab.errors.EmbedlabError` naming the file and line; the prepare stage then
validates the returned manifest (columns, splits, image files) like any other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from embedlab.registries import SOURCES

if TYPE_CHECKING:
    from embedlab.config import PrepareParams


@dataclass
class PreparedData:
    """What a source hands to the prepare stage."""

    df: pd.DataFrame
    dataset_root: Path
    """Folder that the relative paths in ``df`` start from."""
    info: dict[str, Any] = field(default_factory=dict)
    """Recorded in the ``manifest.json`` sidecar (source name, input folder, counts...)."""
    name: str | None = None
    """What errors call the manifest: the user's own file for ``csv``; by default
    ``<source> manifest``."""


def get_source(name: str) -> Callable[[PrepareParams, Path], PreparedData]:
    """Look a source up by name in :data:`embedlab.registries.SOURCES`.

    >>> get_source("digits").__name__
    'prepare_digits'
    """
    return SOURCES.get(name)
