"""prepare: turn the configured source into ``data/prepared/`` (images + manifest)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from embedlab.config import Params, PrepareParams
from embedlab.data.manifest import validate_manifest, write_manifest
from embedlab.data.sources import get_source
from embedlab.stages.common import PREPARED_DIR, log


def run_prepare(params: Params, root: Path = Path(".")) -> Path:
    """Build the prepared folder in a temporary sibling, validate it, then swap it in.

    A bad input leaves an earlier ``data/prepared/`` untouched.
    """
    target = root / PREPARED_DIR
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".prepared-", dir=target.parent))
    try:
        cfg = _resolved(params, root)
        prepared = get_source(cfg.source)(cfg, staging)
        name = prepared.name or f"{cfg.source} manifest"
        df = validate_manifest(
            prepared.df, prepared.dataset_root.resolve(), name=name, image_check=cfg.image_check
        )
        write_manifest(df, staging, prepared.dataset_root, **prepared.info)
        _swap_in(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    counts = df["split"].value_counts().to_dict()
    log.info("prepared %d rows (%s) into %s", len(df), counts, target)
    return target / "manifest.csv"


def _resolved(params: Params, root: Path) -> PrepareParams:
    """``prepare.*`` with input paths relative to ``root`` and the split seed filled in."""
    cfg = params.prepare
    update: dict[str, object] = {}
    for key in ("root", "dataset_root"):
        value = getattr(cfg, key)
        if value and not Path(value).expanduser().is_absolute():
            update[key] = str(root / value)
    if cfg.split_seed is None:
        update["split_seed"] = params.seed
    return cfg.model_copy(update=update)


def _swap_in(staging: Path, target: Path) -> None:
    """Replace ``target`` by ``staging`` with renames (the old folder survives a failure)."""
    backup = target.with_name(f".{target.name}.old")
    shutil.rmtree(backup, ignore_errors=True)
    if target.exists():
        target.rename(backup)
    staging.rename(target)
    shutil.rmtree(backup, ignore_errors=True)
