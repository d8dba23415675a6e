"""Data sources: each turns some input into image files + a manifest DataFrame.

A source is a function ``prepare(cfg: PrepareParams, out_dir: Path) -> PreparedData``.
The registry maps ``prepare.source`` names to them; modules are imported lazily.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from embedlab.errors import EmbedlabError

if TYPE_CHECKING:
    from embedlab.config import PrepareParams


@dataclass
class PreparedData:
    """What a source hands to the prepare stage."""

    df: pd.DataFrame
    dataset_root: Path
    """Folder that the relative paths in ``df`` start from."""
    info: dict[str, Any] = field(default_factory=dict)


SOURCES: dict[str, str] = {
    "digits": "embedlab.data.sources.digits:prepare_digits",
}
"""Source name -> ``module:function``."""


def get_source(name: str) -> Callable[[PrepareParams, Path], PreparedData]:
    """Look a source up by name.

    >>> get_source("digits").__name__
    'prepare_digits'
    """
    if name not in SOURCES:
        raise EmbedlabError(
            f"params.yaml: prepare.source: unknown source {name!r} (known: {', '.join(SOURCES)})"
        )
    module, func = SOURCES[name].split(":")
    return getattr(importlib.import_module(module), func)
