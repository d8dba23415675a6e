"""The durable local spool: every tracker call is written here before it is sent.

One journal per backend and run, under ``logs/spool/<backend>/<run id>/``::

    meta.json       backend, run id (null until the run exists), what opens the run
    journal.jsonl   one JSON record a line, ``seq`` increasing: metrics (with step and
                    time), image (a PNG beside it), embeddings (an .npz beside it),
                    params, summary, artifact (a path)
    images/         the PNG files of image records, named by their seq
    embeddings/     the .npz files of embeddings records (:mod:`.projection`)
    acked           the highest seq the backend acknowledged (every lower one too)
    rejected.jsonl  records the backend refused for good (a bad value), with the cause
    lock            held (``flock``) by the one process that writes and sends this journal

Records are sent in ``seq`` order and acknowledged after the backend accepted them, so a
replay (the next stage of the experiment, or ``embedlab sync``) sends exactly the records
after ``acked``, never one twice. Appends are flushed to the OS at once and fsync'd in
batches; a crash can cut the last line short, and a cut line is ignored (and cut off) on
the next open. Acknowledged records are compacted away, so the spool holds what is unsent;
past ``max_bytes`` new records are dropped with one warning.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import threading
import time
import warnings
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

SPOOL_DIR = Path("logs") / "spool"
JOURNAL = "journal.jsonl"
ACKED = "acked"
META = "meta.json"
REJECTED = "rejected.jsonl"
LOCK = "lock"
IMAGES = "images"
KINDS = ("metrics", "image", "embeddings", "params", "summary", "artifact")
ATTACHED = {"image": (IMAGES, ".png"), "embeddings": ("embeddings", ".npz")}
"""Kinds whose payload is a file beside the journal: its folder and suffix."""
"""Record kinds (``params`` is read back from older journals; params go at start)."""
FSYNC_EVERY = 100
"""Records between two fsyncs (also at least once a second, and at close); the worker
thread of the backend does them, never the training step."""
FSYNC_SECONDS = 1.0
ACK_SECONDS = 0.5
"""Longest time an acknowledgement stays in memory only."""
COMPACT_BYTES = 4 << 20
"""Acknowledged bytes at the head of a journal that trigger rewriting it without them."""


class SpoolBusy(OSError):
    """Another process holds the journal (a stage or ``embedlab sync`` is sending it)."""


@dataclass
class Record:
    """One journaled call: ``kind`` and its fields (``body``), in ``seq`` order."""

    seq: int
    kind: str
    body: dict[str, Any]
    attachment: Any = field(default=None, repr=False)
    """The picture or :class:`~embedlab.tracking.projection.Projection` itself, in the
    process that logged it; a replay rereads its file."""
    line_bytes: int = 0
    """Bytes of its journal line (for the size bound and compaction)."""
    file_bytes: int = 0
    """Bytes of its payload file (PNG, npz), deleted once acknowledged."""
    queued: float = 0.0
    """``time.monotonic()`` when appended (0 for records replayed from disk: due at once)."""


def spool_key(run_id: str) -> str:
    """A folder name for a run id (ids of every backend are safe; anything odd is replaced).

    >>> spool_key("3f2a9c"), spool_key("exp/1 x")
    ('3f2a9c', 'exp_1_x')
    """
    return re.sub(r"[^A-Za-z0-9._-]", "_", run_id) or "_"


def _parse_lines(data: bytes) -> tuple[list[dict[str, Any]], int]:
    """Complete records and the byte length they span; a cut or garbled line is skipped.

    >>> _parse_lines(b'{"seq": 1, "kind": "params"}\\n{"seq": 2, "ki')
    ([{'seq': 1, 'kind': 'params'}], 29)
    """
    records: list[dict[str, Any]] = []
    end = data.rfind(b"\n") + 1  # anything after the last newline is a write cut short
    for number, line in enumerate(data[:end].splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            int(record["seq"]), str(record["kind"])
        except (ValueError, KeyError, TypeError):
            log.warning("spool: skipping unreadable journal line %d", number)
            continue
        records.append(record)
    return records, end


class Journal:
    """The append-only journal of one backend and run, and the queue of its unsent records.

    ``folder=None`` keeps everything in memory (tests, a hub without a repo). Within a
    process, opening the same folder twice returns the same object (see :meth:`open`), so a
    later stage and a still-sending earlier one share one queue and one ack.

    >>> journal = Journal(None, "csv")
    >>> journal.append("metrics", {"step": 0, "metrics": {"train/loss": 1.0}}).seq
    1
    >>> journal.append("summary", {"metrics": {"val/x": 0.5}}).seq
    2
    >>> [r.kind for r in journal.pending()]
    ['metrics', 'summary']
    >>> journal.ack(1)
    >>> [r.seq for r in journal.pending()], journal.acked
    ([2], 1)
    """

    _open: ClassVar[dict[Path, Journal]] = {}
    _open_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        folder: Path | None,
        backend: str,
        max_bytes: float = float("inf"),
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        self.folder = folder
        self.backend = backend
        self.max_bytes = max_bytes
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        """Notified on every append and ack (workers wait on it)."""
        self.send_lock = threading.Lock()
        """Held while a batch is with the backend: one sender at a time per journal."""
        self.acked = 0
        self.rejected = 0
        self.dropped = 0
        self._pending: deque[Record] = deque()
        self._next = 1
        self._bytes = 0
        self._acked_bytes = 0  # acknowledged lines still in the file (compaction)
        self._unsynced = 0
        self._synced_at = time.monotonic()
        self._warned_full = False
        self._ack_saved_at = 0.0
        self._refs = 1
        self.notify_at = 1
        """Pending metric records that wake the workers (their batch size); others always do."""
        self._file: io.BufferedWriter | None = None
        self._lock_file: Any = None
        self.meta: dict[str, Any] = dict(meta or {})
        if folder is not None:
            self._open_folder(folder)

    # -- opening ----------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        folder: Path,
        backend: str,
        max_bytes: float = float("inf"),
        meta: Mapping[str, Any] | None = None,
    ) -> Journal:
        """The journal in ``folder``, shared within this process; :class:`SpoolBusy` if
        another process holds it. ``meta`` is written for a new journal (kept for an old one)."""
        folder = Path(folder).resolve()
        with cls._open_lock:
            journal = cls._open.get(folder)
            if journal is not None:
                with journal.lock:
                    journal._refs += 1
                    journal.max_bytes = max_bytes
                return journal
            journal = cls(folder, backend, max_bytes, meta)
            cls._open[folder] = journal
            return journal

    def _open_folder(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(folder / LOCK, "a+b")  # noqa: SIM115 - held while open
        try:
            import fcntl

            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # no flock (Windows): one writer is assumed
            pass
        except OSError as exc:
            self._lock_file.close()
            raise SpoolBusy(f"{folder} is in use by another process") from exc
        if (folder / META).is_file():
            self.meta = {**json.loads((folder / META).read_text()), **self.meta_update(self.meta)}
        self._write_meta()
        if (folder / ACKED).is_file():
            text = (folder / ACKED).read_text().strip()
            self.acked = int(text) if text.isdigit() else 0
        path = folder / JOURNAL
        data = path.read_bytes() if path.is_file() else b""
        records, end = _parse_lines(data)
        if end < len(data):  # a line cut short by a crash: drop it before appending after it
            with open(path, "r+b") as handle:
                handle.truncate(end)
        last = self.acked
        for raw in records:
            seq = int(raw["seq"])
            last = max(last, seq)
            line = len(_line(seq, raw["kind"], _body(raw)))
            if seq <= self.acked:
                self._acked_bytes += line
                continue
            image_file = raw.get("file")
            picture = self._file_size(folder / image_file) if image_file else 0
            self._pending.append(Record(seq, raw["kind"], _body(raw), None, line, picture))
            self._bytes += line + picture
        self._bytes += self._acked_bytes
        self._next = last + 1
        self._file = open(path, "ab")  # noqa: SIM115 - the journal stays open while in use

    @staticmethod
    def meta_update(meta: Mapping[str, Any]) -> dict[str, Any]:
        """What a reopening stage may change in ``meta.json``: only a run id it learnt."""
        return {"run_id": meta["run_id"]} if meta.get("run_id") else {}

    @staticmethod
    def _file_size(path: Path) -> int:
        try:
            return path.stat().st_size
        except OSError:
            return 0

    def _write_meta(self) -> None:
        assert self.folder is not None
        tmp = self.folder / f".{META}.tmp"
        tmp.write_text(json.dumps(self.meta, indent=1, default=str))
        os.replace(tmp, self.folder / META)

    def set_run_id(self, run_id: str) -> None:
        """Record the run id once the run exists (a run opened after an outage)."""
        with self.lock:
            if self.meta.get("run_id") == run_id:
                return
            self.meta["run_id"] = run_id
            if self.folder is not None:
                self._write_meta()

    # -- writing ----------------------------------------------------------------------------
    def append(
        self,
        kind: str,
        body: Mapping[str, Any],
        attachment: Any = None,
        data: bytes | None = None,
    ) -> Record | None:
        """Journal one call and queue it; ``None`` when the spool is full (warned once).

        An image or embeddings record keeps ``attachment`` for this process and its encoded
        ``data`` (a PNG, an npz: encoded once by the caller for every backend) on disk.
        """
        assert kind in KINDS, kind
        with self.lock:
            if self._bytes - self._acked_bytes >= self.max_bytes:  # unsent bytes only
                self._full()
                return None
            seq = self._next
            self._next += 1
            fields = dict(body)
            record = Record(seq, kind, fields, attachment=attachment, queued=time.monotonic())
            if self.folder is None or self._file is None:
                self._pending.append(record)
                self._wake(kind)
                return record
            if attachment is not None:
                folder, suffix = ATTACHED[kind]
                name = f"{folder}/{seq:09d}{suffix}"
                (self.folder / folder).mkdir(exist_ok=True)
                if data is None:
                    data = encode_attachment(kind, attachment)
                (self.folder / name).write_bytes(data)
                fields["file"] = name
                record.file_bytes = len(data)
            line = _line(seq, kind, fields)
            self._file.write(line)
            self._file.flush()  # in the OS at once: a killed process loses nothing
            record.line_bytes = len(line)
            self._bytes += record.line_bytes + record.file_bytes
            self._unsynced += 1  # fsync'd by the backend's worker (sync_due), not here
            self._pending.append(record)
            self._wake(kind)
            return record

    def _wake(self, kind: str) -> None:
        """Wake the workers for a full batch or a rare record; a timed wait covers the rest."""
        if kind != "metrics" or len(self._pending) >= self.notify_at:
            self.changed.notify_all()

    def _full(self) -> None:
        self.dropped += 1
        if not self._warned_full:
            self._warned_full = True
            where = self.folder or "memory"
            warnings.warn(
                f"tracker spool {where} holds {self._bytes / 2**20:.1f} MB of records "
                f"'{self.backend}' has not acknowledged (tracking.spool.max_mb is "
                f"{self.max_bytes / 2**20:g}); new records for it are dropped until it catches "
                "up (local reports are still written)",
                RuntimeWarning,
                stacklevel=4,
            )

    def sync_due(self) -> bool:
        """Unsynced lines that are FSYNC_EVERY many, or older than FSYNC_SECONDS."""
        with self.lock:
            if not self._unsynced:
                return False
            old = time.monotonic() - self._synced_at > FSYNC_SECONDS
            return self._unsynced >= FSYNC_EVERY or old

    def sync(self) -> None:
        """fsync the journal: by the worker thread in batches, and at close.

        The disk wait happens outside the lock (on a duplicate of the file descriptor), so
        a training step appending meanwhile never waits for the disk.
        """
        with self.lock:
            if self._file is None or not self._unsynced:
                self._unsynced = 0
                return
            fd = os.dup(self._file.fileno())
            self._unsynced = 0
            self._synced_at = time.monotonic()
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- reading and acknowledging ----------------------------------------------------------
    def pending(self, limit: int | None = None) -> list[Record]:
        """Unacknowledged records, oldest first (at most ``limit``)."""
        with self.lock:
            if limit is None:
                return list(self._pending)
            return [r for _, r in zip(range(limit), self._pending, strict=False)]

    @property
    def pending_count(self) -> int:
        with self.lock:
            return len(self._pending)

    @property
    def oldest_pending(self) -> Record | None:
        with self.lock:
            return self._pending[0] if self._pending else None

    def attachment(self, record: Record) -> Any:
        """The picture of an image record, the projection of an embeddings record (from
        memory, or from its file in the spool)."""
        if record.attachment is not None:
            return record.attachment
        assert self.folder is not None
        path = self.folder / record.body["file"]
        if record.kind == "embeddings":
            from embedlab.tracking.projection import Projection

            return Projection.from_bytes(path.read_bytes())
        from PIL import Image

        with Image.open(path) as img:
            img.load()
            return img.copy()

    def ack(self, seq: int) -> None:
        """The backend has every record up to ``seq``: drop them from the queue and disk."""
        with self.lock:
            if seq <= self.acked:
                return
            done = []
            while self._pending and self._pending[0].seq <= seq:
                done.append(self._pending.popleft())
            self.acked = seq
            for record in done:  # the PNG goes now, the line at the next compaction
                if self.folder is not None and "file" in record.body:
                    (self.folder / record.body["file"]).unlink(missing_ok=True)
                self._bytes -= record.file_bytes
                self._acked_bytes += record.line_bytes
            if self.folder is not None:
                if self._file is None or time.monotonic() - self._ack_saved_at > ACK_SECONDS:
                    self._save_ack()
                if self._acked_bytes > COMPACT_BYTES and self._file is not None:
                    self._compact()
            self.changed.notify_all()

    def _save_ack(self) -> None:
        """Persist ``acked`` (atomically; lazily, at most every ACK_SECONDS, and at close).

        A crash can lose the last second of acks: those records are sent again, which
        MLflow dedupes (same key, step, value and time) and local backends rewrite.
        """
        assert self.folder is not None
        tmp = self.folder / f".{ACKED}.tmp"
        tmp.write_text(str(self.acked))
        os.replace(tmp, self.folder / ACKED)
        self._ack_saved_at = time.monotonic()

    def reject(self, record: Record, cause: str) -> None:
        """The backend refused ``record`` for good: keep it in ``rejected.jsonl``, move on."""
        with self.lock:
            self.rejected += 1
            if self.folder is not None:
                with open(self.folder / REJECTED, "a") as handle:
                    entry = {"seq": record.seq, "kind": record.kind, **record.body, "cause": cause}
                    handle.write(json.dumps(entry, default=str) + "\n")
            self.ack(record.seq)

    def _compact(self) -> None:
        """Rewrite the journal with only the unacknowledged lines."""
        assert self.folder is not None and self._file is not None
        path = self.folder / JOURNAL
        tmp = self.folder / f".{JOURNAL}.tmp"
        with open(tmp, "wb") as handle:
            for record in self._pending:
                handle.write(_line(record.seq, record.kind, record.body))
            handle.flush()
            os.fsync(handle.fileno())
        self._file.close()
        os.replace(tmp, path)
        self._file = open(path, "ab")  # noqa: SIM115
        self._bytes -= self._acked_bytes
        self._acked_bytes = 0
        self._unsynced = 0

    def close(self) -> None:
        """Fsync, compact away what was acknowledged, release the folder (last user only)."""
        with self._open_lock, self.lock:
            self._refs -= 1
            if self._refs > 0:
                return
            if self.folder is not None:
                self._open.pop(self.folder, None)
            if self._file is None:
                return
            self.sync()
            self._save_ack()
            if self._acked_bytes:
                self._compact()
            self._file.close()
            self._file = None
            if self._lock_file is not None:
                self._lock_file.close()  # releases the flock
                self._lock_file = None


def png_bytes(image: Image.Image) -> bytes:
    """``image`` encoded as PNG (once per hub call, shared by every backend's journal)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def encode_attachment(kind: str, attachment: Any) -> bytes:
    """The file bytes of an image (PNG) or embeddings (npz) record."""
    return png_bytes(attachment) if kind == "image" else attachment.to_bytes()


def _line(seq: int, kind: str, body: Mapping[str, Any]) -> bytes:
    """One journal line (``NaN`` stays ``NaN``: Python's json reads it back).

    >>> _line(3, "metrics", {"step": 2, "metrics": {"train/loss": 0.5}})
    b'{"seq": 3, "kind": "metrics", "step": 2, "metrics": {"train/loss": 0.5}}\\n'
    """
    return (json.dumps({"seq": seq, "kind": kind, **body}) + "\n").encode()


def _body(raw: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in raw.items() if k not in ("seq", "kind")}


# -- looking at the spool from outside (embedlab sync) --------------------------------------
@dataclass
class SpoolEntry:
    """One journal folder as ``embedlab sync --status`` shows it."""

    backend: str
    folder: Path
    run_id: str | None
    pending: int
    kinds: dict[str, int]
    busy: bool = False
    """Held by a running process (a stage, another sync)."""


def pending_records(folder: Path) -> list[dict[str, Any]]:
    """The unacknowledged records of a journal folder, read without opening it for writing.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> lines = ['{"seq": 1, "kind": "params"}', '{"seq": 2, "kind": "summary"}', '']
    >>> _ = (folder / JOURNAL).write_text("\\n".join(lines))
    >>> _ = (folder / ACKED).write_text("1")
    >>> [r["seq"] for r in pending_records(folder)]
    [2]
    """
    text = (folder / ACKED).read_text().strip() if (folder / ACKED).is_file() else "0"
    acked = int(text) if text.isdigit() else 0
    data = (folder / JOURNAL).read_bytes() if (folder / JOURNAL).is_file() else b""
    records, _ = _parse_lines(data)
    return [r for r in records if int(r["seq"]) > acked]


def _is_busy(folder: Path) -> bool:
    try:
        import fcntl
    except ImportError:
        return False
    if not (folder / LOCK).is_file():
        return False
    with open(folder / LOCK, "a+b") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    return False


def spool_entries(root: Path) -> Iterator[SpoolEntry]:
    """Every journal under ``<root>/logs/spool``, pending or not, by backend then folder."""
    base = root / SPOOL_DIR
    if not base.is_dir():
        return
    for backend_dir in sorted(p for p in base.iterdir() if p.is_dir()):
        for folder in sorted(p for p in backend_dir.iterdir() if p.is_dir()):
            meta: dict[str, Any] = {}
            with contextlib.suppress(OSError, ValueError):
                meta = json.loads((folder / META).read_text())
            records = pending_records(folder)
            kinds: dict[str, int] = {}
            for record in records:
                kinds[record["kind"]] = kinds.get(record["kind"], 0) + 1
            yield SpoolEntry(
                backend=str(meta.get("backend", backend_dir.name)),
                folder=folder,
                run_id=meta.get("run_id"),
                pending=len(records),
                kinds=kinds,
                busy=_is_busy(folder),
            )
