"""Delivery of one backend's journal: send in order, acknowledge, retry with backoff.

A :class:`Channel` pairs a :class:`~embedlab.tracking.base.Tracker` with its
:class:`~embedlab.tracking.spool.Journal`. Its worker thread sends the journal's
unacknowledged records (replayed ones from an earlier stage first), acknowledges each
batch once the backend took it, and when a send fails waits and tries again, doubling the
wait up to ``max_backoff``. It tells its owner (the hub, or ``embedlab sync``) about a
failure, a recovery and a refused record through callbacks; the owner decides what to say.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedlab.tracking.spool import FSYNC_SECONDS

if TYPE_CHECKING:
    from embedlab.tracking.base import RunInfo, Tracker
    from embedlab.tracking.spool import Journal, Record

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpoolSettings:
    """How patiently a channel retries, and how long a stage waits for it at the end."""

    finish_timeout: float = 5.0
    """At the end, seconds without progress after which unsent records are left to the spool."""
    first_backoff: float = 1.0
    max_backoff: float = 30.0


class Rejected(Exception):
    """A record the backend can never take (e.g. an artifact changed since it was logged)."""


@dataclass
class Callbacks:
    """What a channel reports; every callback runs on the channel's worker thread."""

    failed: Callable[[Channel, str, BaseException], None]
    recovered: Callable[[Channel, float], None]
    rejected: Callable[[Channel, Record, str], None]


def backoff(attempt: int, settings: SpoolSettings, jitter: float = 0.2) -> float:
    """Seconds before retry number ``attempt`` (1, 2, 4, ... up to ``max_backoff``, +-20%).

    >>> s = SpoolSettings(first_backoff=1.0, max_backoff=30.0)
    >>> [backoff(n, s, jitter=0) for n in (1, 2, 3, 6, 9)]
    [1.0, 2.0, 4.0, 30.0, 30.0]
    """
    base = min(settings.max_backoff, settings.first_backoff * 2 ** max(0, attempt - 1))
    return base * random.uniform(1 - jitter, 1 + jitter)


class Channel:
    """One backend fed from its journal, by a worker thread (or inline, when strict)."""

    def __init__(
        self,
        tracker: Tracker,
        journal: Journal,
        run: RunInfo,
        settings: SpoolSettings,
        callbacks: Callbacks,
    ) -> None:
        self.tracker = tracker
        self.journal = journal
        self.run = run
        self.settings = settings
        self.callbacks = callbacks
        journal.notify_at = max(1, tracker.batch_records)
        self.started = False
        self.dead = False
        """A failure no retry can fix (the client is not installed): nothing more is sent."""
        self.failing: str | None = None
        """The cause of the current outage; ``None`` while the backend answers."""
        self.failing_since = 0.0
        self.attempts = 0
        self.next_try = 0.0
        self.closing = False
        self.flushing = False
        """Send without waiting for a batch to fill (``TrackerHub.flush``)."""
        self.closing_since = 0.0
        self.tried_since_close = False
        self.gave_up = False
        self.abandoned = False
        self.last_progress = time.monotonic()
        self.sent = 0
        self._worker: threading.Thread | None = None
        self._exited = threading.Event()

    @property
    def name(self) -> str:
        return self.tracker.name

    # -- opening ----------------------------------------------------------------------------
    def start_now(self) -> BaseException | None:
        """Open (or resume) the run in the caller's thread; the error, if it failed."""
        try:
            run_id = self.tracker.start(self.run)
        except Exception as exc:
            self.dead = isinstance(exc, ImportError) or self.tracker.permanent(exc)
            self._note_failure(exc)
            return exc
        self._started(run_id)
        return None

    def _started(self, run_id: str) -> None:
        self.tracker.run_id = run_id
        self.run = replace(self.run, run_id=run_id)
        self.journal.set_run_id(run_id)
        self.started = True

    def spawn(self) -> None:
        """Start the worker thread (it first replays what an earlier stage left unsent)."""
        if self.dead:
            return
        self._worker = threading.Thread(
            target=self._loop, name=f"embedlab-{self.name}", daemon=True
        )
        self._worker.start()

    # -- the worker ---------------------------------------------------------------------------
    def _next(self) -> tuple[str, float]:
        """What the worker does now: ``exit``, ``start``, ``send``, or ``wait`` (seconds)."""
        now = time.monotonic()
        if self.abandoned or self.dead or self.gave_up:
            return "exit", 0.0
        retry_now = self.closing and not self.tried_since_close  # one try at once at the end
        if self.failing is not None and now < self.next_try and not retry_now:
            if self.closing and self.next_try > self._close_deadline():
                self.gave_up = True  # the next try would come too late: leave it to the spool
                return "exit", 0.0
            return "wait", self.next_try - now
        if not self.started:
            return "start", 0.0
        oldest = self.journal.oldest_pending
        if oldest is None:
            return ("exit", 0.0) if self.closing else ("wait", 3600.0)
        if (
            self.closing
            or self.flushing
            or self.journal.pending_count >= self.tracker.batch_records
        ):
            return "send", 0.0
        age = now - oldest.queued
        if age >= self.tracker.batch_seconds:
            return "send", 0.0
        return "wait", self.tracker.batch_seconds - age

    def _close_deadline(self) -> float:
        """At the end, retries go on until ``finish_timeout`` passes without progress."""
        return max(self.closing_since, self.last_progress) + self.settings.finish_timeout

    def _loop(self) -> None:
        try:
            while True:
                if self.journal.sync_due():
                    self.journal.sync()
                with self.journal.changed:
                    action, seconds = self._next()
                    if action == "wait":  # wake at least once a second for the fsync
                        self.journal.changed.wait(min(seconds, FSYNC_SECONDS))
                        continue
                if action == "exit":
                    break
                if self.closing:
                    self.tried_since_close = True
                if action == "start":
                    self._try_start()
                else:
                    self._try_send()
            if not (self.abandoned or self.dead or self.gave_up):  # a dead server: no wait
                self._finish_tracker()
        except Exception:  # the worker must never die silently; the records stay spooled
            log.exception("tracker worker for %s stopped", self.name)
        finally:
            self._exited.set()
            if self.abandoned:  # the stage has moved on; the journal is ours to close
                self.journal.close()

    def _try_start(self) -> None:
        try:
            run_id = self.tracker.start(self.run)
        except Exception as exc:
            self.dead = isinstance(exc, ImportError)
            self._failure("start", exc)
            return
        self._started(run_id)
        self._recovery()

    def _try_send(self) -> None:
        with self.journal.send_lock:
            if self.abandoned:
                return
            batch = self._batch()
            if not batch:
                return
            try:
                self.deliver(batch)
            except Exception as exc:
                self._send_failed(batch, exc)
                return
            self.journal.ack(batch[-1].seq)
        self.sent += len(batch)
        self.last_progress = time.monotonic()
        self._recovery()

    def _batch(self) -> list[Record]:
        """The next records to send: a run of metrics (one request for batching backends)."""
        limit = self.tracker.max_batch if self.attempts == 0 else 1
        records = self.journal.pending(max(1, limit))
        if not records:
            return []
        first = records[0]
        if first.kind != "metrics":
            return [first]
        run = []
        for record in records:
            if record.kind != "metrics":
                break
            run.append(record)
        return run

    def _send_failed(self, batch: list[Record], exc: BaseException) -> None:
        permanent = isinstance(exc, Rejected) or self.tracker.permanent(exc)
        if permanent and len(batch) == 1:
            cause = one_line(exc)
            self.journal.reject(batch[0], cause)
            self.callbacks.rejected(self, batch[0], cause)
            return
        if permanent:  # find the bad record: the next attempt sends one at a time
            self.attempts = max(self.attempts, 1)
            return
        self._failure(_what(batch[0].kind), exc)

    def _note_failure(self, exc: BaseException) -> None:
        now = time.monotonic()
        if self.failing is None:
            self.failing_since = now
        self.failing = one_line(exc)
        self.attempts += 1
        wait = backoff(self.attempts, self.settings)
        if self.closing:  # the stage is waiting: retry often within finish_timeout
            wait = min(wait, 0.5)
        self.next_try = now + wait

    def _failure(self, what: str, exc: BaseException) -> None:
        first = self.failing is None
        self._note_failure(exc)
        if first:
            self.callbacks.failed(self, what, exc)

    def _recovery(self) -> None:
        self.attempts = 0
        if self.failing is not None:
            down = time.monotonic() - self.failing_since
            self.failing = None
            self.callbacks.recovered(self, down)

    def _finish_tracker(self) -> None:
        try:
            self.tracker.finish()
        except Exception as exc:  # the records are sent; closing the run is best effort
            log.warning("tracker '%s': closing the run failed (%s)", self.name, one_line(exc))

    # -- sending one batch --------------------------------------------------------------------
    def deliver(self, batch: list[Record]) -> None:
        """Hand ``batch`` (one kind) to the backend; raises what the backend raised."""
        tracker, first = self.tracker, batch[0]
        body = first.body
        if first.kind == "metrics":
            tracker.log_metric_steps(
                [(r.body["metrics"], int(r.body["step"]), r.body.get("ts")) for r in batch]
            )
        elif first.kind == "image":
            tracker.log_image(body["key"], self.journal.attachment(first), int(body["step"]))
        elif first.kind == "embeddings":
            tracker.log_embeddings(body["key"], self.journal.attachment(first), int(body["step"]))
        elif first.kind == "summary":
            tracker.log_summary(body["metrics"])
        elif first.kind == "artifact":
            tracker.log_artifact(unchanged_artifact(body))
        else:  # pragma: no cover - Journal.append only takes KINDS
            raise Rejected(f"unknown record kind {first.kind!r}")

    # -- strict hubs and embedlab sync: inline delivery -------------------------------------
    def drain(self) -> None:
        """Send every pending record in the caller's thread; raise on the first failure."""
        if not self.started:
            self._started(self.tracker.start(self.run))
        while True:
            batch = self._batch()
            if not batch:
                return
            with self.journal.send_lock:
                try:
                    self.deliver(batch)
                except Exception as exc:
                    if isinstance(exc, Rejected) or self.tracker.permanent(exc):
                        if len(batch) == 1:
                            self.journal.reject(batch[0], one_line(exc))
                            self.callbacks.rejected(self, batch[0], one_line(exc))
                            continue
                        self.attempts = 1  # one at a time from here on
                        continue
                    raise
                self.journal.ack(batch[-1].seq)
            self.sent += len(batch)

    # -- closing ------------------------------------------------------------------------------
    def begin_close(self) -> None:
        """Stop batching: send what is pending, then close the run (on the worker)."""
        with self.journal.changed:
            self.closing = True
            self.closing_since = time.monotonic()
            self.journal.changed.notify_all()

    def wait_closed(self) -> bool:
        """Wait while the worker makes progress; give up after ``finish_timeout`` without.

        Returns True when the worker finished (everything sent, or it gave up on a dead
        backend); False when it was abandoned mid-send (it closes the journal itself later).
        """
        if self._worker is None:
            if not self.dead and self.started and not self.journal.pending_count:
                self._finish_tracker()
            self.journal.close()
            return True
        while not self._exited.wait(0.05):
            # The worker gives up by itself at the deadline; past it, it is stuck in a call.
            if time.monotonic() > self._close_deadline() + 1.0:
                with self.journal.changed:
                    self.abandoned = True
                    self.journal.changed.notify_all()
                if not self._exited.is_set():
                    return False
                break
        if not self.abandoned:
            self.journal.close()
        return True


def unchanged_artifact(body: dict[str, Any]) -> Path:
    """The artifact's path, if the file is still the one that was logged.

    A replay must not upload a model retrained since (to the wrong run).

    >>> unchanged_artifact({"path": "/no/such/file", "size": 1, "mtime_ns": 0})
    Traceback (most recent call last):
    ...
    embedlab.tracking.channel.Rejected: /no/such/file no longer exists
    """
    path = Path(body["path"])
    try:
        stat = path.stat()
    except OSError:
        raise Rejected(f"{path} no longer exists") from None
    if (stat.st_size, stat.st_mtime_ns) != (body.get("size"), body.get("mtime_ns")):
        raise Rejected(f"{path} changed since it was logged")
    return path


def _what(kind: str) -> str:
    return {"metrics": "log_metrics", "image": "log_image"}.get(kind, f"log_{kind}")


def one_line(exc: BaseException) -> str:
    """An exception as one redacted line (type, first line, at most 300 characters).

    >>> one_line(ValueError("bad" + chr(10) + "second line"))
    'ValueError: bad'
    """
    from embedlab.tracking.secrets import redact

    text = f"{type(exc).__name__}: {exc}".strip().splitlines()[0][:300]
    return redact(text)
