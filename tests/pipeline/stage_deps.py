"""What each DVC stage really depends on: the import closure of its entry point.

Static imports (module level and inside functions) of ``embedlab`` modules are followed,
with every parent package's ``__init__``. Lazy names are followed where they are
resolved: a package's ``_PUBLIC`` table when a name is imported from it, and the entries
of a registry (:mod:`embedlab.registries`) when a module of the closure calls it (a
stage that builds a loss by name depends on every loss). Run it to print the ``deps``
that ``dvc.yaml`` should declare, or write them into it::

    python -m tests.pipeline.stage_deps [--write]
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
STAGES = ("prepare", "train", "rerank", "validate", "embed")
_REGISTRY_USE = re.compile(
    r"\b(SOURCES|LOSSES|MINERS|OPTIMIZERS|TRACKERS|INDEXES|DISTANCES|REDUCERS|SAMPLERS)"
    r"\.(get|build)\("
)


def module_file(module: str) -> Path | None:
    """The source file of an ``embedlab`` module or package (None for other modules)."""
    if module != "embedlab" and not module.startswith("embedlab."):
        return None
    base = SRC / Path(*module.split("."))
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _lazy_table(tree: ast.Module) -> dict[str, str]:
    """A package's ``_PUBLIC = {"Name": "module"}`` table, if it has one."""
    for node in tree.body:
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = [t.id for t in targets if isinstance(t, ast.Name)]
            if "_PUBLIC" in names and isinstance(node.value, ast.Dict):
                return {
                    k.value: v.value
                    for k, v in zip(node.value.keys, node.value.values, strict=True)
                    if isinstance(k, ast.Constant) and isinstance(v, ast.Constant)
                }
    return {}


def _registry_entries() -> dict[str, list[str]]:
    """Each ``Registry(...)`` of registries.py: the modules of its entries (a string, or an
    ``Entry(...)`` whose first argument is one; ``**`` spreads name other packages)."""
    tree = ast.parse((SRC / "embedlab" / "registries.py").read_text())
    out: dict[str, list[str]] = {}
    for node in tree.body:
        call = node.value if isinstance(node, ast.Assign) else None
        if not (isinstance(call, ast.Call) and ast.unparse(call.func) == "Registry"):
            continue
        name = node.targets[0].id  # type: ignore[attr-defined,union-attr]
        table = call.args[2]
        out[name] = []
        pairs = zip(table.keys, table.values, strict=True) if isinstance(table, ast.Dict) else []
        for key, value in pairs:
            if key is None:  # a ** spread: pml.* entries of pytorch-metric-learning
                continue
            if isinstance(value, ast.Call) and value.args:
                value = value.args[0]
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                out[name].append(value.value.split(":")[0])
    return out


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node except those under ``if TYPE_CHECKING:`` (never run)."""
    out: list[ast.AST] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        out.append(node)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))
    return out


def imports_of(path: Path) -> set[str]:
    """``embedlab`` modules that ``path`` imports or builds through a registry."""
    text = path.read_text()
    tree = ast.parse(text)
    here = _module_name(path) if path.is_relative_to(SRC) else ""
    found: set[str] = set()
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module
            if node.level:
                package = here.rsplit(".", node.level)[0]
                base = f"{package}.{base}"
            found.add(base)
            package_file = module_file(base)
            table = _lazy_table(ast.parse(package_file.read_text())) if package_file else {}
            for alias in node.names:
                if module_file(f"{base}.{alias.name}") is not None:
                    found.add(f"{base}.{alias.name}")
                elif alias.name in table:
                    found.add(table[alias.name])
    if here not in ("embedlab.registries", "embedlab.config"):
        entries = _registry_entries()
        for match in _REGISTRY_USE.finditer(text):
            found.update(entries[match.group(1)])
    return {m for m in found if module_file(m) is not None}


def closure(roots: list[Path]) -> set[Path]:
    """Every source file the roots load, directly or not (with parent ``__init__``s)."""
    seen: set[Path] = set()
    todo = list(roots)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for module in imports_of(path):
            parts = module.split(".")
            for i in range(1, len(parts) + 1):
                file = module_file(".".join(parts[:i]))
                if file is not None and file not in seen:
                    todo.append(file)
    return seen


def stage_closure(stage: str) -> set[Path]:
    """The library files stage ``stage`` runs (its entry point, its stage module...)."""
    roots = [ROOT / "pipeline" / f"{stage}.py", SRC / "embedlab" / "stages" / f"{stage}.py"]
    return {p for p in closure(roots) if p.is_relative_to(SRC)}


def library_files() -> list[Path]:
    return sorted(p for p in (SRC / "embedlab").rglob("*.py") if "__pycache__" not in p.parts)


def collapsed(files: set[Path]) -> list[str]:
    """Repo-relative deps, a folder standing for all its ``.py`` files when all are used."""
    out: list[str] = []

    def walk(folder: Path) -> None:
        children = sorted(folder.iterdir())
        py = [c for c in children if c.suffix == ".py"]
        subdirs = [c for c in children if c.is_dir() and c.name != "__pycache__"]
        every = [p for p in folder.rglob("*.py") if "__pycache__" not in p.parts]
        if every and all(p in files for p in every) and folder != SRC / "embedlab":
            out.append(str(folder.relative_to(ROOT)))
            return
        out.extend(str(p.relative_to(ROOT)) for p in py if p in files)
        for sub in subdirs:
            walk(sub)

    walk(SRC / "embedlab")
    return out


def write_dvc_yaml(path: Path = ROOT / "dvc.yaml") -> None:
    """Replace each stage's ``src/embedlab`` deps in ``dvc.yaml`` by its closure."""
    lines = path.read_text().split("\n")
    out: list[str] = []
    stage = None
    i = 0
    while i < len(lines):
        found = re.match(r"^  (\w+):$", lines[i])
        stage = found.group(1) if found else stage
        if lines[i].strip().startswith("- src/embedlab") and stage in STAGES:
            while i < len(lines) and lines[i].strip().startswith("- src/embedlab"):
                i += 1
            out.extend(f"      - {dep}" for dep in collapsed(stage_closure(stage)))
            continue
        out.append(lines[i])
        i += 1
    path.write_text("\n".join(out))


if __name__ == "__main__":
    import sys

    if "--write" in sys.argv:
        write_dvc_yaml()
    for stage in STAGES:
        print(f"{stage}:")
        for dep in collapsed(stage_closure(stage)):
            print(f"  - {dep}")
