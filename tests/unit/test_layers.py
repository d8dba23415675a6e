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
    "metrics": {"errors", "lazy", "retrieval"},
    "miners": {"errors", "registries", "retrieval"},
    "losses": {"errors", "miners", "retrieval"},
    "models": {"errors", "io"},
    "viz": {"errors", "retrieval"},
    "data": {"errors", "io", "lazy", "registries"},
    # tracking names metrics by metrics.names, the one naming rule (it imports nothing heavy)
    "tracking": {"errors", "io", "registries", "metrics.names"},
    # embedding's multi-process pass runs on the Lightning edge (imported lazily there)
    "embedding": {"data", "errors", "io", "lazy", "lightning", "models", "retrieval"},
    "lightning": {"config", "data", "embedding", "errors", "io", "metrics", "tracking", "viz"},
    "stages": {
        "config", "data", "embedding", "errors", "io", "lightning", "losses", "metrics",
        "miners", "models", "registries", "registry", "retrieval", "tracking", "compare",
    },
    # compare reads finished runs: their files, the manifest, a metric to redo top-k lists
    "compare": {
        "config", "data", "errors", "io", "lazy", "metrics", "retrieval", "tracking", "viz",
    },
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
        allowed = ALLOWED[here]
        exact = ".".join(module.split(".")[1:3])  # e.g. "metrics.names"
        assert there == here or there in allowed or exact in allowed, f"{rel} imports {module}"


def test_no_stage_module_imports_another_stage_module() -> None:
    stages = {"prepare", "train", "rerank", "validate", "embed"}
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


# Parts that take typed params objects (``embedlab.config``) only as annotations, under
# ``if TYPE_CHECKING:``: the config module is passed in, never imported at run time.
TYPE_ONLY: dict[str, set[str]] = {
    "data": {"config"},
    "embedding": {"config"},
    "tracking": {"config"},
}


def _all_import_froms(file) -> list[tuple[str, list[str]]]:
    """Every ``from embedlab... import ...`` of a file, TYPE_CHECKING blocks included."""
    import ast

    out = []
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("embedlab"):
            out.append((node.module, [alias.name for alias in node.names]))
    return out


@pytest.mark.parametrize("file", FILES, ids=lambda f: str(f.relative_to(SRC)))
def test_type_checking_imports_follow_the_layers_too(file) -> None:
    # A dependency hidden under `if TYPE_CHECKING:` is still a dependency of the design.
    rel = file.relative_to(SRC / "embedlab")
    here = rel.parts[0] if len(rel.parts) > 1 else rel.stem
    for module, _ in _all_import_froms(file):
        there = _part(module)
        exact = ".".join(module.split(".")[1:3])
        allowed = ALLOWED[here] | TYPE_ONLY.get(here, set())
        assert there == here or there in allowed or exact in allowed, f"{rel} imports {module}"


@pytest.mark.parametrize("file", FILES, ids=lambda f: str(f.relative_to(SRC)))
def test_no_module_imports_a_private_name_of_another(file) -> None:
    for module, names in _all_import_froms(file):
        private = [n for n in names if n.startswith("_")]
        assert not private, f"{file.relative_to(SRC)} imports {private} from {module}"
