"""The tracker interface and the fan-out hub that keeps a failing backend from stopping work.

One experiment is one tracker run across stages: ``train`` starts the runs and writes
their ids to ``reports/run.json``; ``validate`` and ``embed`` resume them by id.
"""

from __future__ import annotations

import logging
import queue
import threading
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedlab.errors import EmbedlabError
from embedlab.tracking.secrets import redact

if TYPE_CHECKING:
    from PIL import Image

    from embedlab.config import Params

log = logging.getLogger(__name__)


class TrackerError(EmbedlabError):
    """A tracker failed and ``tracking.strict`` is on."""


def call_with_timeout(fn: Callable[[], Any], seconds: float, what: str) -> Any:
    """Return ``fn()``, or raise :class:`TimeoutError` if it takes longer than ``seconds``.

    Clients that retry for minutes against a dead server (opening a run, the final flush)
    run on a daemon thread, so a stuck call is abandoned rather than waited for.

    >>> call_with_timeout(lambda: 42, 1.0, "answer")
    42
    >>> import time
    >>> call_with_timeout(lambda: time.sleep(1), 0.05, "nap")
    Traceback (most recent call last):
    ...
    TimeoutError: nap did not finish within 0.05 s
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"embedlab-{what}", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise TimeoutError(f"{what} did not finish within {seconds:g} s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


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


class Tracker(ABC):
    """One experiment-tracking backend.

    Implementations import their client lazily (inside ``start``) and must be safe to
    call after a failure: the hub stops calling a tracker once it has raised.
    """

    name: str = "base"

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

    @abstractmethod
    def log_image(self, key: str, image: Image.Image, step: int) -> None:
        """Log an image so that each step keeps its own picture."""

    def log_summary(self, metrics: Mapping[str, float]) -> None:  # noqa: B027 - optional hook
        """Final metrics of the run (TensorBoard registers them with the hparams)."""

    def log_artifact(self, path: Path) -> None:  # noqa: B027 - optional hook
        """Store a file with the run where the backend stores artifacts."""

    @abstractmethod
    def finish(self) -> None:
        """Flush and close the run (it can be resumed later by id)."""


class TrackerHub:
    """Fan every call out to several trackers; a failing tracker is warned about and skipped.

    With ``background=True`` every call after ``start`` is queued and run, in order, on one
    worker thread, so a training step only pays for putting a dict on a queue; ``flush``
    (called by ``finish``) waits until the queue is empty. Strict hubs stay synchronous so
    a failure can stop the stage.

    >>> hub = TrackerHub([], background=True)
    >>> hub.log_metrics({"train/loss": 1.0}, step=0)
    >>> hub.finish()
    >>> hub.run_ids
    {}
    """

    def __init__(
        self, trackers: list[Tracker], strict: bool = False, background: bool = False
    ) -> None:
        self.trackers = list(trackers)
        self.strict = strict
        self.background = background and not strict
        self.failed: dict[str, str] = {}
        self._queue: queue.Queue[tuple[str, Callable[[Tracker], Any]]] = queue.Queue()
        self._worker: threading.Thread | None = None

    def _submit(self, what: str, fn: Callable[[Tracker], Any]) -> None:
        if not self.background:
            self._call(what, fn)
            return
        if self._worker is None:
            self._worker = threading.Thread(
                target=self._drain, name="embedlab-trackers", daemon=True
            )
            self._worker.start()
        self._queue.put((what, fn))

    def _drain(self) -> None:
        while True:
            what, fn = self._queue.get()
            try:
                self._call(what, fn)
            except Exception:  # _call already isolates trackers; never let the worker die
                log.exception("tracker worker: %s failed", what)
            finally:
                self._queue.task_done()

    def flush(self) -> None:
        """Wait until every queued call has reached the trackers."""
        if self._worker is not None:
            self._queue.join()

    @property
    def active(self) -> list[Tracker]:
        return [t for t in self.trackers if t.name not in self.failed]

    @property
    def run_ids(self) -> dict[str, str]:
        return {t.name: t.run_id for t in self.active if t.run_id is not None}

    def _call(self, what: str, fn: Callable[[Tracker], Any]) -> None:
        for tracker in self.active:
            try:
                fn(tracker)
            except Exception as exc:  # a tracker must never stop the work
                self._fail(tracker, what, exc)

    def _fail(self, tracker: Tracker, what: str, exc: BaseException) -> None:
        cause = redact(f"{type(exc).__name__}: {exc}".strip().splitlines()[0][:300])
        message = f"tracker '{tracker.name}' failed during {what} ({cause})"
        if self.strict:
            raise TrackerError(message + "; tracking.strict is true") from exc
        self.failed[tracker.name] = cause
        warnings.warn(
            message + "; skipping it for the rest of this stage (local reports are still written)",
            RuntimeWarning,
            stacklevel=3,
        )
        try:
            tracker.finish()
        except Exception:  # best effort: the backend is already broken
            log.debug("closing failed tracker %s raised", tracker.name, exc_info=True)

    def start(self, run: RunInfo, run_ids: Mapping[str, str] | None = None) -> dict[str, str]:
        """Start every tracker (resuming the ids in ``run_ids``); return the live run ids."""
        run_ids = dict(run_ids or {})

        def start_one(tracker: Tracker) -> None:
            info = RunInfo(**{**run.__dict__, "run_id": run_ids.get(tracker.name)})
            tracker.run_id = tracker.start(info)

        self._call("start", start_one)
        return self.run_ids

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        clean = {k: float(v) for k, v in metrics.items()}
        self._submit("log_metrics", lambda t: t.log_metrics(clean, step))

    def log_image(self, key: str, image: Image.Image, step: int) -> None:
        self._submit("log_image", lambda t: t.log_image(key, image, step))

    def log_summary(self, metrics: Mapping[str, float]) -> None:
        self._submit("log_summary", lambda t: t.log_summary(metrics))

    def log_artifact(self, path: Path) -> None:
        self._submit("log_artifact", lambda t: t.log_artifact(path))

    def finish(self) -> None:
        self._submit("finish", lambda t: t.finish())
        self.flush()
