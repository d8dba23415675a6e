"""The tracker interface and the hub that journals every call and fans it out.

One experiment is one tracker run across stages: ``train`` starts the runs and writes
their ids to ``reports/run.json``; ``validate`` and ``embed`` resume them by id. Every
call goes to each backend's journal in the spool first (:mod:`embedlab.tracking.spool`),
then to the backend on that backend's worker thread (:mod:`embedlab.tracking.channel`):
a backend that fails is retried with backoff, never stops the stage, and what it has not
acknowledged when the stage ends is replayed by the next stage or ``embedlab sync``.
"""

from __future__ import annotations

import logging
import time
import uuid
import warnings
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedlab.errors import EmbedlabError
from embedlab.tracking.channel import Callbacks, Channel, SpoolSettings
from embedlab.tracking.secrets import redact
from embedlab.tracking.spool import Journal, Record, SpoolBusy, encode_attachment, spool_key
from embedlab.tracking.timeout import call_with_timeout

if TYPE_CHECKING:
    from PIL import Image

    from embedlab.config import Params
    from embedlab.tracking.projection import Projection

log = logging.getLogger(__name__)


class TrackerError(EmbedlabError):
    """A tracker failed and ``tracking.strict`` is on."""


@dataclass
class RunInfo:
    """What every backend needs to open (or reopen) a run."""

    run_name: str
    params: dict[str, Any]
    """Flattened params (``train.optimizer.lr``)."""
    tags: dict[str, str]
    run_id: str | None = None
    """Set when resuming a run started by an earlier stage."""
    stage: str = "train"
    replay: bool = False
    """Opened by ``embedlab sync`` to send spooled records (DVCLive adds to its folder)."""


class Tracker(ABC):
    """One experiment-tracking backend: it sends; the hub journals, retries and replays.

    Implementations import their client lazily (inside ``start``). Each ``log_*`` method
    sends one record and raises if the backend did not take it; it is then called again
    with the same record later (so it must not half-apply a record it raised on, where
    that is avoidable). ``start`` may be called again after it raised.
    """

    name: str = "base"
    batch_records: int = 25
    """Step records the worker lets gather before it wakes up and sends them."""
    batch_seconds: float = 1.0
    """...or the age of the oldest unsent record at which it sends anyway. Waking once a
    second rather than at every step keeps the workers off the training's CPU cores."""
    max_batch: int = 100
    """Metric records per :meth:`log_metric_steps` call."""

    def __init__(self, params: Params, root: Path) -> None:
        self.params = params
        self.root = root
        self.run_id: str | None = None

    @abstractmethod
    def start(self, run: RunInfo) -> str:
        """Open a new run or resume ``run.run_id``; return the run id."""

    @abstractmethod
    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Log scalars at a step."""

    def log_metric_steps(
        self, points: Sequence[tuple[Mapping[str, float], int, int | None]]
    ) -> None:
        """Several steps at once: ``(metrics, step, unix time in ms or None)``.

        Backends that send in batches override this (and raise ``max_batch``).
        """
        for metrics, step, _ in points:
            self.log_metrics(metrics, step)

    def permanent(self, error: BaseException) -> bool:
        """True if retrying can never make the backend take the record (a bad value).

        Such a record is set aside in ``rejected.jsonl`` with a warning; anything else
        (network, server, locks) is retried.
        """
        return isinstance(error, TypeError | ValueError | KeyError | AttributeError)

    @abstractmethod
    def log_image(self, key: str, image: Image.Image, step: int) -> None:
        """Log an image so that each step keeps its own picture."""

    def log_summary(self, metrics: Mapping[str, float]) -> None:  # noqa: B027 - optional hook
        """Facts of the run, not points of a curve (query counts, the baseline, embed's
        rows and speed): merged into the run's summary, so each stage adds its own and a
        later value of a key replaces an earlier one."""

    def log_artifact(self, path: Path) -> None:  # noqa: B027 - optional hook
        """Store a file with the run where the backend stores artifacts."""

    takes_embeddings: bool = False
    """Whether :meth:`log_embeddings` does anything (the hub skips building a projection
    when no backend takes one)."""

    def log_embeddings(self, key: str, projection: Projection, step: int) -> None:  # noqa: B027
        """Embeddings to look at (TensorBoard's projector, a W&B table); optional hook."""

    @abstractmethod
    def finish(self) -> None:
        """Flush and close the run (it can be resumed later by id)."""


class TrackerHub:
    """Journal every call for each backend, then send it from that backend's worker thread.

    A training step pays for a JSON line per backend (written, flushed to the OS, fsync'd
    in batches); the send happens in the background. A failing backend is warned about
    once per outage and retried with backoff; ``finish`` waits for a backend only while it
    makes progress (``finish_timeout``), and what is unsent stays in the spool. With
    ``spool_dir=None`` the journals live in memory (nothing survives the process). Strict
    hubs send inline and turn the first failure into :class:`TrackerError`.

    >>> hub = TrackerHub([])
    >>> hub.log_metrics({"train/loss": 1.0}, step=0)
    >>> hub.finish()
    >>> hub.run_ids
    {}
    """

    def __init__(
        self,
        trackers: list[Tracker],
        strict: bool = False,
        spool_dir: Path | None = None,
        settings: SpoolSettings | None = None,
        max_bytes: float = float("inf"),
    ) -> None:
        self.trackers = list(trackers)
        self.strict = strict
        self.spool_dir = spool_dir
        self.settings = settings or SpoolSettings()
        self.max_bytes = max_bytes
        self.failed: dict[str, str] = {}
        """Backends down right now (name -> cause); a backend that comes back leaves it."""
        self.channels: list[Channel] = []
        self._callbacks = Callbacks(self._on_failed, self._on_recovered, self._on_rejected)
        self._warned_rejected: set[str] = set()

    # -- opening ------------------------------------------------------------------------------
    def start(self, run: RunInfo, run_ids: Mapping[str, str] | None = None) -> dict[str, str]:
        """Open each backend's run (resuming ``run_ids``) and journal; return the live ids.

        Opening is tried once here (bounded by each backend's own timeout); a backend that
        fails keeps being tried in the background, with its records spooled meanwhile.
        Records an earlier stage left unsent in the same journal are sent first.
        """
        run_ids = dict(run_ids or {})
        for tracker in self.trackers:
            info = replace(run, run_id=run_ids.get(tracker.name))
            started: str | None = None
            error: Exception | None = None
            try:
                started = tracker.start(info)
            except Exception as exc:
                error = exc
            if error is not None and self.strict:
                self._raise(tracker.name, "start", error)
            journal = self._journal(tracker.name, started or info.run_id, info)
            channel = Channel(tracker, journal, info, self.settings, self._callbacks)
            self.channels.append(channel)
            if started is not None:
                channel._started(started)
            else:
                assert error is not None
                channel.dead = isinstance(error, ImportError) or tracker.permanent(error)
                channel._note_failure(error)
                self._on_failed(channel, "start", error, stacklevel=3)
            if channel.dead:
                continue
            if self.strict:
                channel.drain()  # an earlier stage's records, before this stage's
            else:
                channel.spawn()
        return self.run_ids

    def _journal(self, backend: str, run_id: str | None, run: RunInfo) -> Journal:
        meta = {
            "backend": backend,
            "run_id": run_id,
            "run": {
                "run_name": run.run_name,
                "params": run.params,
                "tags": run.tags,
                "stage": run.stage,
            },
        }
        if self.spool_dir is None:
            return Journal(None, backend, meta=meta)
        if run_id:
            key = spool_key(run_id)
        else:  # the run does not exist yet (server down at start): a local name until it does
            key = f"local-{spool_key(run.run_name)}-{uuid.uuid4().hex[:6]}"
        folder = self.spool_dir / backend / key
        deadline = time.monotonic() + 2.0
        while True:
            try:
                return Journal.open(folder, backend, self.max_bytes, meta)
            except SpoolBusy:  # `embedlab sync` is sending it: wait a little, then our own
                if time.monotonic() > deadline:
                    log.warning("spool %s is in use; this stage journals beside it", folder)
                    folder = folder.with_name(f"{folder.name}~{uuid.uuid4().hex[:6]}")
                time.sleep(0.1)

    # -- what a backend's worker reports -------------------------------------------------------
    def _on_failed(
        self, channel: Channel, what: str, exc: BaseException, stacklevel: int = 2
    ) -> None:
        cause = channel.failing or type(exc).__name__
        self.failed[channel.name] = cause
        if channel.dead:
            tail = "; skipping it for the rest of this stage (local reports are still written)"
        else:
            where = channel.journal.folder or "memory"
            tail = (
                f"; retrying in the background, unsent records are kept in {where} (the next "
                "stage or `embedlab sync` sends them; local reports are still written)"
            )
        warnings.warn(
            f"tracker '{channel.name}' failed during {what} ({cause}){tail}",
            RuntimeWarning,
            stacklevel=stacklevel + 1,
        )

    def _on_recovered(self, channel: Channel, down_s: float) -> None:
        self.failed.pop(channel.name, None)
        log.info(
            "tracker '%s' answers again after %.0f s; sending its %d spooled records",
            channel.name,
            down_s,
            channel.journal.pending_count,
        )

    def _on_rejected(self, channel: Channel, record: Record, cause: str) -> None:
        if channel.name in self._warned_rejected:
            return
        self._warned_rejected.add(channel.name)
        warnings.warn(
            f"tracker '{channel.name}' refused a {record.kind} record ({cause}); it is kept in "
            f"{channel.journal.folder or 'memory'}/rejected.jsonl and not retried",
            RuntimeWarning,
            stacklevel=2,
        )

    def _raise(self, name: str, what: str, exc: BaseException) -> None:
        cause = redact(f"{type(exc).__name__}: {exc}".strip().splitlines()[0][:300])
        raise TrackerError(
            f"tracker '{name}' failed during {what} ({cause}); tracking.strict is true"
        ) from exc

    # -- state ----------------------------------------------------------------------------------
    @property
    def active(self) -> list[Tracker]:
        """Backends still being fed (all but those that can never work)."""
        return [c.tracker for c in self.channels if not c.dead]

    @property
    def run_ids(self) -> dict[str, str]:
        """Ids of the runs that exist (a backend down mid-run keeps its id)."""
        return {c.name: c.tracker.run_id for c in self.channels if c.tracker.run_id is not None}

    @property
    def pending(self) -> dict[str, int]:
        """Records not yet acknowledged, per backend."""
        return {c.name: c.journal.pending_count for c in self.channels if not c.dead}

    # -- logging --------------------------------------------------------------------------------
    def _submit(self, kind: str, body: dict[str, Any], attachment: Any = None) -> None:
        channels = [
            c
            for c in self.channels
            if not c.dead and (kind != "embeddings" or c.tracker.takes_embeddings)
        ]
        data = None
        if attachment is not None and self.spool_dir is not None and channels:
            data = encode_attachment(kind, attachment)  # once, for every backend's journal
        for channel in channels:
            channel.journal.append(kind, body, attachment=attachment, data=data)
            if self.strict:
                try:
                    channel.drain()
                except Exception as exc:
                    self._raise(channel.name, _what(kind), exc)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        clean = {k: float(v) for k, v in metrics.items()}
        body = {"step": int(step), "ts": int(time.time() * 1000), "metrics": clean}
        self._submit("metrics", body)

    def log_image(self, key: str, image: Image.Image, step: int) -> None:
        self._submit("image", {"key": key, "step": int(step)}, attachment=image)

    @property
    def takes_embeddings(self) -> bool:
        """True if a live backend shows embeddings (build a :class:`Projection` only then)."""
        return any(c.tracker.takes_embeddings for c in self.channels if not c.dead)

    def log_embeddings(self, key: str, projection: Projection, step: int) -> None:
        """A sample of embeddings with metadata and thumbnails, to the backends that take it."""
        body = {"key": key, "step": int(step), "rows": len(projection)}
        self._submit("embeddings", body, attachment=projection)

    def log_summary(self, metrics: Mapping[str, float]) -> None:
        self._submit("summary", {"metrics": {k: float(v) for k, v in metrics.items()}})

    def log_artifact(self, path: Path) -> None:
        """A file by path (with its size and time: a replay skips a file changed since)."""
        path = Path(path).resolve()
        stat = path.stat()
        body = {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        self._submit("artifact", body)

    def flush(self, timeout: float | None = None) -> None:
        """Wait (at most ``timeout`` s) until every answering backend acknowledged all."""
        wait = self.settings.finish_timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        for channel in self.channels:
            with channel.journal.changed:
                channel.flushing = True  # do not wait for a batch to fill up
                channel.journal.changed.notify_all()
        try:
            while time.monotonic() < deadline:
                if not any(
                    c.journal.pending_count and c.failing is None and not c.dead
                    for c in self.channels
                ):
                    return
                time.sleep(0.02)
        finally:
            for channel in self.channels:
                channel.flushing = False

    def finish(self) -> None:
        """Send what is pending, close every run; leave what a dead backend did not take.

        Waits for a backend only while it makes progress: a dead one costs at most one
        more try, a hung one ``finish_timeout`` seconds.
        """
        for channel in self.channels:
            channel.begin_close()
        for channel in self.channels:
            channel.wait_closed()
        for channel in self.channels:
            left = channel.journal.pending_count
            if left and not channel.dead:
                log.warning(
                    "tracker '%s': %d records not sent yet stay in %s; the next stage of this "
                    "experiment or `embedlab sync` sends them",
                    channel.name,
                    left,
                    channel.journal.folder or "memory (lost at exit)",
                )


def _what(kind: str) -> str:
    return {"metrics": "log_metrics", "image": "log_image"}.get(kind, f"log_{kind}")


__all__ = ["RunInfo", "Tracker", "TrackerError", "TrackerHub", "call_with_timeout"]
