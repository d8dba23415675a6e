"""``reports/run.json``: the tracker run ids train opened, so later stages log into them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from embedlab.io import read_json, write_json

if TYPE_CHECKING:
    from embedlab.tracking.base import TrackerHub

__all__ = ["RUN_FILE", "read_run_ids", "write_run_ids"]

RUN_FILE = Path("reports") / "run.json"


def read_run_ids(root: Path) -> dict[str, str]:
    """Run ids recorded by the train stage (empty when there are none)."""
    path = root / RUN_FILE
    if not path.is_file():
        return {}
    return dict(read_json(path).get("run_ids", {}))


def write_run_ids(root: Path, hub: TrackerHub) -> dict[str, str]:
    """Record the run ids so later stages log into the same runs; return them.

    A backend that failed mid-run keeps its id (its run exists on the server): the next
    stage tries to resume it rather than open a second run for the same experiment.
    """
    ids = {t.name: t.run_id for t in hub.trackers if t.run_id is not None}
    write_json(root / RUN_FILE, {"run_ids": ids, "failed": hub.failed})
    return ids
