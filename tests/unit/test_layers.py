"""The module seams of CONTRIBUTING.md, checked on the source: who may import whom."""

from __future__ import annotations

import re

import pytest

from tests.pipeline.stage_deps import SRC, imports_of, library_files

# Each part of the library and the parts it may import (CONTRIBUTING.md, "Layers").
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "lazy": set(),
    "registry": {"errors"},
    "registries": {"registry"},
    "io": {"errors"},
    "config": {"errors", "registry", "registries"},
    "retrieval": {"errors", "io"},
    "metrics": {"errors", "retrieval"},
    "miners": {"errors", "registries", "retrieval"},
    "losses": {"errors", "miners", "retrieval"},
    "models": {"errors", "io"},
    "viz": {"errors"},
    "data": {"errors", "io", "lazy", "registries"},
    "tracking": {"errors", "io", "registries"},
    # embedding's multi-process pass runs on the Lightning edge (imported lazily there)
    "embedding": {"data", "errors", "io", "lazy", "lightning", "models", "retrieval"},
    "lightning": {"config", "data", "embedding", "errors", "io", "metrics", "tracking", "viz"},
    "stages": {
        "config", "data", "embedding", "errors", "io", "lightning", "losses", "metrics",
        "miners", "models", "registries", "registry", "retrieval", "tracking", "compare",
    },
    # compare reads finished runs: their files, the manifest, a metric to redo top-k lists
    "compare": {"config", "data", "errors", "io", "lazy", "metrics", "tracking", "viz"},
    "cli": {
        "compare", "data", "embedding", "errors", "io", "models", "viz", "config", "stages",
        "tracking",
    },
}  # fmt: skip


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "embedlab"


FILES = [f for f in library_files() if f.name != "__init__.py" or f.parent != SRC / "embedlab"]


@pytest.mark.parametrize("file", FILES, ids=lambda f: str(f.relative_to(SRC)))
def test_every_import_follows_the_layers(file) -> None:
    rel = file.relative_to(SRC / "embedlab")
    here = rel.parts[0] if len(rel.parts) > 1 else rel.stem
    assert here in ALLOWED, f"{rel}: a new part of the library: add it to ALLOWED and CONTRIBUTING"
    for module in imports_of(file):
        there = _part(module)
        assert there == here or there in ALLOWED[here], f"{rel} imports {module}"


def test_no_stage_module_imports_another_stage_module() -> None:
    stages = {"prepare", "train", "validate", "embed"}
    for stage in stages:
        file = SRC / "embedlab" / "stages" / f"{stage}.py"
        others = {f"embedlab.stages.{s}" for s in stages - {stage}}
        assert not imports_of(file) & others, stage


def test_no_module_outside_data_reads_a_private_dataset_attribute() -> None:
    names = "_is_query|_is_gallery|_categories|_sequence|_labels|_paths"
    private = re.compile(rf"(?<!self)\.({names})\b")
    for file in library_files():
        if (SRC / "embedlab" / "data") in file.parents:
            continue
        assert not private.search(file.read_text()), file
