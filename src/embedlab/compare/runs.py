"""Which run a name means, and reading its files: folders, git revisions, DVC experiments.

A run spec is tried, in order, as

1. a folder that holds a ``reports/`` folder (a copy of a run, or ``.`` for the workspace);
2. a DVC experiment name (a git ref ``refs/exps/<baseline>/<name>``, as ``dvc exp show``
   lists them);
3. a git revision (``HEAD~1``, a branch, a tag, a sha).

Files of a git run are read with ``git show REV:./path`` (what git tracks, such as
``reports/per_query.csv``, ``params.yaml``, ``reports/run.json``) and, for outputs that
only DVC tracks (``data/embeddings/``), from the local DVC cache with :func:`dvc.api.open`.
"""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import yaml

from embedlab.errors import EmbedlabError

__all__ = [
    "PARAMS_FILE",
    "PER_QUERY_FILE",
    "QUERY_COLUMNS",
    "RUN_FILE",
    "Run",
    "RunSource",
    "list_experiments",
    "load_run",
    "metric_columns",
    "parse_per_query",
    "resolve_run",
    "safe_name",
]

log = logging.getLogger("embedlab")

RunKind = Literal["folder", "experiment", "revision"]

PER_QUERY_FILE = "reports/per_query.csv"
RUN_FILE = "reports/run.json"
PARAMS_FILE = "params.yaml"

QUERY_COLUMNS = ("row_id", "path", "label", "category")
"""Descriptive columns of ``per_query.csv``; every other column is a per-query metric."""

_EXPERIMENT_REF = re.compile(r"^refs/exps/[0-9a-f]{2}/[0-9a-f]{38}/(?P<name>[^/]+)$")
_GIT_TIMEOUT = 60


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[bytes] | None:
    """Run git in ``repo``; None when git is missing or times out."""
    try:
        return subprocess.run(
            ["git", *args], cwd=repo, capture_output=True, timeout=_GIT_TIMEOUT, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None


def safe_name(name: str, limit: int = 60) -> str:
    """``name`` as a file-system-safe folder name: ``[A-Za-z0-9._-]`` only, no leading dot.

    Example:
        >>> safe_name("HEAD~1"), safe_name("../runs/<b>"), safe_name("..")
        ('HEAD_1', 'runs_b', 'run')
    """
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return cleaned[:limit] or "run"


@dataclass(frozen=True)
class RunSource:
    """Where one run's files are: a folder, or a git commit of the repo at ``root``.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / "params.yaml").write_text("seed: 1")
        >>> source = RunSource(spec=str(folder), name="copy", kind="folder", root=folder)
        >>> source.read_text("params.yaml"), source.read_bytes("missing.csv")
        ('seed: 1', None)
    """

    spec: str
    name: str
    kind: RunKind
    root: Path
    rev: str | None = None

    def where(self, path: str) -> str:
        """How error messages name ``path`` of this run (``HEAD~1:reports/x.csv``)."""
        return str(self.root / path) if self.kind == "folder" else f"{self.spec}:{path}"

    def read_bytes(self, path: str) -> bytes | None:
        """The file's bytes, or None when the run has no such file."""
        if self.kind == "folder":
            file = self.root / path
            return file.read_bytes() if file.is_file() else None
        shown = _git(self.root, "show", f"{self.rev}:./{path}")
        if shown is not None and shown.returncode == 0:
            return shown.stdout
        return self._read_dvc(path)

    def _read_dvc(self, path: str) -> bytes | None:
        # Outputs that DVC caches are in git only as .dvc/dvc.lock entries: read them from
        # the local cache. Anything going wrong (no cache, no remote) means "not available".
        try:
            import dvc.api

            with dvc.api.open(path, repo=str(self.root), rev=self.rev, mode="rb") as handle:
                return handle.read()
        except Exception as exc:  # dvc raises many types; all mean "not here"
            log.debug("dvc.api.open(%s, rev=%s) failed: %s", path, self.rev, exc)
            return None

    def read_text(self, path: str) -> str | None:
        """The file as UTF-8 text, or None when absent."""
        data = self.read_bytes(path)
        return None if data is None else data.decode("utf-8")

    def describe(self) -> dict[str, Any]:
        """JSON-ready identity: spec, name, kind and commit."""
        return {"spec": self.spec, "name": self.name, "kind": self.kind, "rev": self.rev}


def _experiment_refs(repo: Path) -> dict[str, list[tuple[str, str]]]:
    """Experiment name -> [(commit, ref)] for every ``refs/exps`` experiment ref."""
    listed = _git(repo, "for-each-ref", "--format=%(objectname) %(refname)", "refs/exps")
    refs: dict[str, list[tuple[str, str]]] = {}
    if listed is None or listed.returncode != 0:
        return refs
    for line in listed.stdout.decode().splitlines():
        commit, _, ref = line.partition(" ")
        match = _EXPERIMENT_REF.match(ref)
        if match:
            refs.setdefault(match["name"], []).append((commit, ref))
    return refs


def _head(repo: Path) -> str | None:
    out = _git(repo, "rev-parse", "--verify", "--quiet", "HEAD")
    return out.stdout.decode().strip() if out is not None and out.returncode == 0 else None


def resolve_run(spec: str, repo: Path = Path(".")) -> RunSource:
    """The run ``spec`` names: a folder with ``reports/``, an experiment or a git revision.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp()) / "lr-3e-3"
        >>> (folder / "reports").mkdir(parents=True)
        >>> source = resolve_run(str(folder))
        >>> source.kind, source.name
        ('folder', 'lr-3e-3')
    """
    path = Path(spec)
    if path.is_dir() and (path / "reports").is_dir():
        resolved = path.resolve()
        name = "workspace" if resolved == Path(repo).resolve() else resolved.name
        return RunSource(spec=spec, name=name, kind="folder", root=resolved)
    repo = Path(repo).resolve()
    matches = _experiment_refs(repo).get(spec, [])
    if len(matches) > 1:  # the same name on several baselines: prefer the current one
        head = _head(repo) or ""
        current = [m for m in matches if m[1].split("/")[2] + m[1].split("/")[3] == head]
        matches = current or matches
    if len(matches) > 1:
        refs = ", ".join(ref for _, ref in matches)
        raise EmbedlabError(f"run '{spec}': experiment name is ambiguous ({refs}); pass a ref")
    if matches:
        return RunSource(spec=spec, name=spec, kind="experiment", root=repo, rev=matches[0][0])
    out = _git(repo, "rev-parse", "--verify", "--quiet", f"{spec}^{{commit}}")
    if out is not None and out.returncode == 0:
        return RunSource(
            spec=spec, name=spec, kind="revision", root=repo, rev=out.stdout.decode().strip()
        )
    if path.is_dir():
        raise EmbedlabError(f"run '{spec}': folder has no reports/ folder")
    raise EmbedlabError(
        f"run '{spec}': not a folder with reports/, a DVC experiment or a git revision of {repo}"
    )


def list_experiments(repo: Path = Path(".")) -> list[RunSource]:
    """Every run ``dvc exp show`` lists: each baseline commit and its experiments.

    The workspace row is left out (name ``.`` to add it).
    """
    repo = Path(repo).resolve()
    try:
        out = subprocess.run(
            [sys.executable, "-m", "dvc", "exp", "show", "--json", "--no-fetch"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise EmbedlabError(f"--all: could not run 'dvc exp show' in {repo} ({exc})") from None
    if out.returncode != 0:
        lines = (out.stderr or out.stdout).strip().splitlines() or ["no output"]
        raise EmbedlabError(f"--all: 'dvc exp show --json' failed in {repo}: {lines[-1]}")
    sources: list[RunSource] = []
    for baseline in json.loads(out.stdout or "[]"):
        if baseline.get("rev") == "workspace" or baseline.get("error"):
            continue
        name = baseline.get("name") or baseline["rev"][:7]
        sources.append(RunSource(name, name, "revision", repo, baseline["rev"]))
        for group in baseline.get("experiments") or []:
            for exp in group.get("revs") or []:
                if exp.get("error") or not exp.get("rev"):
                    continue
                exp_name = exp.get("name") or exp["rev"][:7]
                sources.append(RunSource(exp_name, exp_name, "experiment", repo, exp["rev"]))
    return sources


def metric_columns(table: pd.DataFrame) -> list[str]:
    """The per-query metric columns of a ``per_query.csv`` table, in file order.

    Example:
        >>> metric_columns(pd.DataFrame(columns=["row_id", "path", "cmc@1", "map@5"]))
        ['cmc@1', 'map@5']
    """
    return [c for c in table.columns if c not in QUERY_COLUMNS]


def parse_per_query(data: bytes, where: str) -> pd.DataFrame:
    """Read and check a ``per_query.csv``: integer unique ``row_id``, numeric metrics.

    Descriptive columns are kept as text (they are only shown).

    Example:
        >>> table = parse_per_query(b"row_id,path,label,cmc@1\\n3,a.png,7,1.0\\n", "x.csv")
        >>> table["row_id"].tolist(), table["label"].tolist(), table["cmc@1"].tolist()
        ([3], ['7'], [1.0])
    """
    try:
        table = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise EmbedlabError(f"{where}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    if table.empty:
        raise EmbedlabError(f"{where}: no queries (the file has no data rows)")
    if "row_id" not in table:
        raise EmbedlabError(f"{where}: column 'row_id' is missing (columns: {list(table)})")
    ids = pd.to_numeric(table["row_id"], errors="coerce")
    bad = ids.isna() | (ids % 1 != 0)
    if bad.any():
        row = int(bad.to_numpy().argmax())
        raise EmbedlabError(
            f"{where}: row {row + 2}: row_id {table['row_id'].iloc[row]!r} is not an integer"
        )
    table["row_id"] = ids.astype("int64")
    duplicated = table["row_id"].duplicated()
    if duplicated.any():
        row = int(duplicated.to_numpy().argmax())
        raise EmbedlabError(f"{where}: row {row + 2}: row_id {table['row_id'].iloc[row]} repeats")
    metrics = metric_columns(table)
    if not metrics:
        raise EmbedlabError(f"{where}: no metric columns (expected e.g. cmc@1, map@5)")
    for column in metrics:
        values = pd.to_numeric(table[column], errors="coerce")
        if values.isna().any():
            row = int(values.isna().to_numpy().argmax())
            raise EmbedlabError(
                f"{where}: row {row + 2}, column '{column}': "
                f"{table[column].iloc[row]!r} is not a number"
            )
        table[column] = values.astype("float64")
    for column in QUERY_COLUMNS[1:]:
        if column not in table:
            table[column] = ""
    return table


@dataclass
class Run:
    """One run's records: per-query metrics, params (raw mapping) and tracker run ids."""

    source: RunSource
    per_query: pd.DataFrame
    params: dict[str, Any] = field(default_factory=dict)
    run_ids: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.source.name


def enclosing_repository(folder: Path) -> Path | None:
    """The DVC repository (a folder with ``dvc.yaml``) above ``folder``; None: none.

    A folder run inside a repository without ``params.yaml`` or ``data/prepared`` of its
    own, such as ``reports/reranked`` (validate's re-ranked ranking), was made by that
    repository's run: compare takes its params and images from there.

    Example:
        >>> import tempfile
        >>> repo = Path(tempfile.mkdtemp())
        >>> _ = (repo / "dvc.yaml").write_text("stages: {}")
        >>> (repo / "reports" / "reranked").mkdir(parents=True)
        >>> enclosing_repository(repo / "reports" / "reranked") == repo.resolve()
        True
        >>> enclosing_repository(Path(tempfile.mkdtemp())) is None
        True
    """
    return next((p for p in folder.resolve().parents if (p / "dvc.yaml").is_file()), None)


def load_run(source: RunSource) -> Run:
    """Read a run's ``reports/per_query.csv`` (required), ``params.yaml`` and ``run.json``.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> (folder / "reports").mkdir()
        >>> _ = (folder / PER_QUERY_FILE).write_text("row_id,cmc@1\\n0,1\\n1,0\\n")
        >>> _ = (folder / PARAMS_FILE).write_text("train: {max_epochs: 3}")
        >>> run = load_run(resolve_run(str(folder)))
        >>> float(run.per_query["cmc@1"].mean()), run.params
        (0.5, {'train': {'max_epochs': 3}})
    """
    data = source.read_bytes(PER_QUERY_FILE)
    if data is None:
        raise EmbedlabError(
            f"run '{source.spec}': {source.where(PER_QUERY_FILE)} not found "
            "(run the validate stage for it)"
        )
    per_query = parse_per_query(data, source.where(PER_QUERY_FILE))
    params: dict[str, Any] = {}
    text = source.read_text(PARAMS_FILE)
    repo = enclosing_repository(source.root) if source.kind == "folder" else None
    if text is None and repo is not None and (repo / PARAMS_FILE).is_file():
        text = (repo / PARAMS_FILE).read_text()
    if text is not None:
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise EmbedlabError(
                f"{source.where(PARAMS_FILE)}: not valid YAML ({str(exc).splitlines()[0]})"
            ) from None
        params = loaded if isinstance(loaded, dict) else {}
    run_ids: dict[str, str] = {}
    text = source.read_text(RUN_FILE)
    if text:
        try:
            run_ids = {str(k): str(v) for k, v in json.loads(text).get("run_ids", {}).items()}
        except (ValueError, AttributeError):
            log.warning("%s: not a run.json, ignoring it", source.where(RUN_FILE))
    return Run(source=source, per_query=per_query, params=params, run_ids=run_ids)
