"""``embedlab sync``: send what the stages left in the spool, into the same runs.

Each journal under ``logs/spool/<backend>/<run>/`` with unacknowledged records is opened
(locked, so a running stage and a sync never send the same records), its run is resumed by
the id in ``meta.json`` (or created from the run info kept there, if the backend was down
when the stage began), the records are sent in order and acknowledged, and the run is
closed. A journal whose backend is still down is left as it is, for the next sync.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from embedlab.tracking.base import RunInfo
from embedlab.tracking.channel import Callbacks, Channel, one_line
from embedlab.tracking.spool import META, Journal, SpoolBusy, SpoolEntry, spool_entries

if TYPE_CHECKING:
    from embedlab.config import Params


@dataclass
class SyncResult:
    """What one journal's sync did."""

    backend: str
    folder: Path
    run_id: str | None
    sent: int
    left: int
    error: str | None = None
    """Why records are left (the backend is still down, the journal is in use)."""
    rejected: int = 0


def pending_entries(root: Path) -> list[SpoolEntry]:
    """Journals with unsent records (what ``embedlab sync --status`` lists)."""
    return [entry for entry in spool_entries(root) if entry.pending]


def _run_info(folder: Path) -> RunInfo:
    meta = json.loads((folder / META).read_text())
    run = meta.get("run", {})
    return RunInfo(
        run_name=str(run.get("run_name", folder.name)),
        params=dict(run.get("params", {})),
        tags=dict(run.get("tags", {})),
        run_id=meta.get("run_id"),
        stage=str(run.get("stage", "sync")),
        replay=True,
    )


def sync_spool(params: Params, root: Path) -> Iterator[SyncResult]:
    """Send every pending journal under ``root``; one result per journal, as it is done."""
    from embedlab.tracking import build_tracker, spool_settings

    settings = spool_settings(params)
    for entry in pending_entries(root):
        if entry.busy:
            yield SyncResult(
                entry.backend, entry.folder, entry.run_id, 0, entry.pending, "in use by a stage"
            )
            continue
        try:
            journal = Journal.open(entry.folder, entry.backend)
        except SpoolBusy:
            yield SyncResult(
                entry.backend, entry.folder, entry.run_id, 0, entry.pending, "in use by a stage"
            )
            continue
        rejected: list[str] = []
        callbacks = Callbacks(
            failed=lambda *_: None,
            recovered=lambda *_: None,
            rejected=lambda _channel, _record, cause, seen=rejected: seen.append(cause),
        )
        tracker = build_tracker(entry.backend, params, root)
        channel = Channel(tracker, journal, _run_info(entry.folder), settings, callbacks)
        error = None
        try:
            channel.drain()
            channel._finish_tracker()
        except Exception as exc:  # still down: the records stay for the next sync
            error = one_line(exc)
        finally:
            left = journal.pending_count
            journal.close()
        yield SyncResult(
            entry.backend,
            entry.folder,
            tracker.run_id,
            channel.sent,
            left,
            error,
            len(rejected),
        )
