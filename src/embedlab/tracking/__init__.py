"""The pluggable tracker layer: one interface, one module per backend, a durable spool.

``open_trackers(params, root, stage)`` (:mod:`.factory`) builds the backends named in
``tracking.loggers`` and starts (or resumes, from ``reports/run.json``: :mod:`.run_file`)
their runs; every call is journaled under ``logs/spool/`` before it is sent (see
:mod:`.spool`), and ``embedlab sync`` (:mod:`.sync`) sends what a stage left unsent.
"""

from embedlab.registries import TRACKERS
from embedlab.tracking.base import RunInfo, Tracker, TrackerError, TrackerHub
from embedlab.tracking.factory import (
    backend_class,
    build_tracker,
    open_trackers,
    run_info,
    spool_settings,
    spooled_hub,
    store_root,
)
from embedlab.tracking.run_file import RUN_FILE, read_run_ids, write_run_ids

__all__ = [
    "RUN_FILE",
    "TRACKERS",
    "RunInfo",
    "Tracker",
    "TrackerError",
    "TrackerHub",
    "backend_class",
    "build_tracker",
    "open_trackers",
    "read_run_ids",
    "run_info",
    "spool_settings",
    "spooled_hub",
    "store_root",
    "write_run_ids",
]
