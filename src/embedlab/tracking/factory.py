"""Build the configured trackers and open their runs: the tracker factory.

``open_trackers(params, root, stage)`` builds the backends named in ``tracking.loggers``
(each keeping its store under :func:`store_root`) and starts, or resumes from
``reports/run.json`` (:mod:`.run_file`), their runs behind one spooled :class:`TrackerHub`.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedlab.registries import TRACKERS
from embedlab.tracking.base import RunInfo, Tracker, TrackerHub
from embedlab.tracking.channel import SpoolSettings
from embedlab.tracking.run_file import read_run_ids
from embedlab.tracking.secrets import redact, redact_mapping
from embedlab.tracking.spool import SPOOL_DIR

if TYPE_CHECKING:
    from embedlab.config import Params

__all__ = [
    "backend_class",
    "build_tracker",
    "git_commit",
    "open_trackers",
    "run_info",
    "spool_settings",
    "spooled_hub",
    "store_root",
]


def backend_class(name: str) -> type[Tracker]:
    """The tracker class registered under ``name``.

    >>> backend_class("csv").__name__
    'CsvTracker'
    """
    return TRACKERS.get(name)


class _Unavailable(Tracker):
    """A backend whose client cannot be imported: fails at start, like a dead server."""

    def __init__(self, name: str, error: ImportError, params: Params, root: Path) -> None:
        super().__init__(params, root)
        self.name = name
        self.error = error

    def start(self, run: RunInfo) -> str:
        raise self.error

    def log_metrics(self, metrics: Any, step: int) -> None:
        raise self.error

    def log_image(self, key: str, image: Any, step: int) -> None:
        raise self.error

    def finish(self) -> None:
        pass


def store_root(params: Params, root: Path) -> Path:
    """Where the local tracker stores live: ``tracking.store``, else the repository's root.

    A queued DVC experiment runs in a temporary copy under ``<repo>/.dvc/tmp/exps/``, which
    DVC deletes afterwards; its stores are written to ``<repo>`` instead, so every
    experiment of the repo, queued or not, lands in the same TensorBoard folder and MLflow
    database (under its own run, named after the experiment).

    >>> from embedlab.config import Params
    >>> store_root(Params(), Path("/repo/.dvc/tmp/exps/tmpab12")).as_posix()
    '/repo'
    >>> store_root(Params(), Path("/repo")).as_posix()
    '/repo'
    >>> store_root(Params(tracking={"store": "/shared/runs"}), Path("/repo")).as_posix()
    '/shared/runs'
    """
    resolved = Path(os.path.abspath(root))
    parts = resolved.parts
    repo = resolved
    for i in range(len(parts) - 3):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            repo = Path(*parts[:i])
            break
    store = params.tracking.store
    return Path(os.path.abspath(repo / store)) if store else repo


def build_tracker(name: str, params: Params, root: Path) -> Tracker:
    """An instance of the backend ``name`` keeping its store under :func:`store_root`; a
    missing client becomes a start failure.

    >>> from embedlab.config import Params
    >>> build_tracker("csv", Params(), Path(".")).name
    'csv'
    """
    store = store_root(params, root)
    try:
        return backend_class(name)(params, store)
    except ImportError as exc:  # e.g. the `trackers` extra is not installed
        return _Unavailable(name, exc, params, store)


def git_commit(root: Path) -> str:
    """The commit the workspace is on, or ``unknown`` outside git."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_info(params: Params, root: Path, stage: str) -> RunInfo:
    """Run name and tags: git commit, DVC experiment name, params hash."""
    exp_name = os.environ.get("DVC_EXP_NAME", "")
    run_name = exp_name or time.strftime("run-%Y%m%d-%H%M%S")
    tags = {
        "git_commit": git_commit(root),
        "dvc_exp_name": redact(exp_name),
        "params_hash": params.short_hash(),
    }
    return RunInfo(
        run_name=redact(run_name), params=redact_mapping(params.flat()), tags=tags, stage=stage
    )


def open_trackers(
    params: Params,
    root: Path,
    stage: str,
    resume: bool = False,
    run_ids: dict[str, str] | None = None,
) -> TrackerHub:
    """Build and start the configured trackers.

    Runs named in ``run_ids`` are reopened (a resumed training); with ``resume``
    (validate, embed), those listed in ``reports/run.json`` are, so one experiment stays
    one run, and what an earlier stage left unsent is sent into them first. Backends with
    no recorded id start a new run.
    """
    names = dict.fromkeys(params.tracking.loggers)  # keep order, drop repeats
    hub = spooled_hub([build_tracker(n, params, root) for n in names], params, root)
    if run_ids is None:
        run_ids = read_run_ids(root) if resume else {}
    hub.start(run_info(params, root, stage), run_ids)
    return hub


def spooled_hub(trackers: list[Tracker], params: Params, root: Path) -> TrackerHub:
    """A hub journaling into ``<root>/logs/spool`` with the ``tracking`` settings (not started).

    >>> from embedlab.config import Params
    >>> spooled_hub([], Params(), Path("/repo")).spool_dir.as_posix()
    '/repo/logs/spool'
    """
    return TrackerHub(
        trackers,
        strict=params.tracking.strict,
        spool_dir=store_root(params, root) / SPOOL_DIR,
        settings=spool_settings(params),
        max_bytes=params.tracking.spool.max_mb * 2**20,
    )


def spool_settings(params: Params) -> SpoolSettings:
    """Retry and finish settings from ``tracking.spool``.

    >>> from embedlab.config import Params
    >>> spool_settings(Params()).finish_timeout
    5.0
    """
    cfg = params.tracking.spool
    return SpoolSettings(finish_timeout=cfg.finish_timeout, max_backoff=cfg.max_backoff)
