"""MLflow backend on ``MlflowClient`` with explicit run ids (no global active run).

The tracking URI comes from ``tracking.mlflow.tracking_uri``, else ``MLFLOW_TRACKING_URI``,
else ``sqlite:///<repo root>/mlflow.db`` (MLflow 3's own default store, made absolute so a
stage run from anywhere finds the same database). The same code talks to a remote
``mlflow server``; its HTTP timeout and retries are bounded so a dead server costs
seconds, not minutes. The hub's worker sends step metrics in ``log_batch`` requests of
up to ``flush_every`` steps, with the time each value was logged: a point sent twice
(a replay after a crash) is the same row, which MLflow's store keeps once. On a local
sqlite store, "database is locked" (two experiments writing at once) is retried with
backoff here, and anything still failing is retried by the hub.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from embedlab.metrics.names import mlflow_name
from embedlab.tracking.base import RunInfo, Tracker, call_with_timeout

if TYPE_CHECKING:
    from PIL import Image

    from embedlab.config import MlflowParams

DB_FILE = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
MAX_METRICS_PER_BATCH = 1000  # MLflow's log_batch limits
MAX_PARAMS_PER_BATCH = 100
MAX_PARAM_LENGTH = 6000
FLUSH_INTERVAL_S = 5.0
LOCK_RETRY_S = 60.0
"""How long one call keeps retrying a locked sqlite database before it fails."""
PERMANENT_CODES = {"INVALID_PARAMETER_VALUE", "MALFORMED_REQUEST", "INVALID_STATE"}
"""MLflow error codes no retry can fix (the record itself is wrong)."""
T = TypeVar("T")
lock_retries = 0
"""Calls retried because sqlite was locked, in this process (reported by tests/benchmarks)."""


def is_locked(error: BaseException) -> bool:
    """True for sqlite's "database is locked" (sqlalchemy ``OperationalError``), also when
    MLflow wrapped it in an ``MlflowException``.

    >>> is_locked(RuntimeError("(sqlite3.OperationalError) database is locked"))
    True
    >>> is_locked(RuntimeError("no such table: runs"))
    False
    """
    text = str(error).lower()
    return "database is locked" in text or "database table is locked" in text


@contextlib.contextmanager
def sqlite_init_lock(uri: str) -> Iterator[None]:
    """Hold an exclusive file lock beside a sqlite store (``.<db>.lock``); no-op otherwise.

    >>> with sqlite_init_lock("http://127.0.0.1:5000"):
    ...     pass
    """
    if not uri.startswith("sqlite:///"):
        yield
        return
    try:
        import fcntl
    except ImportError:  # no flock (Windows)
        yield
        return
    db = Path(uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(f".{db.name}.lock"), "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def retry_locked(fn: Callable[[], T], seconds: float = LOCK_RETRY_S) -> T:
    """``fn()``, retried with backoff while sqlite answers "database is locked".

    >>> calls = []
    >>> def flaky():
    ...     calls.append(1)
    ...     if len(calls) < 3:
    ...         raise RuntimeError("database is locked")
    ...     return "done"
    >>> retry_locked(flaky), len(calls)
    ('done', 3)
    """
    deadline = time.monotonic() + seconds
    wait = 0.05
    while True:
        try:
            return fn()
        except Exception as exc:
            if not is_locked(exc) or time.monotonic() + wait > deadline:
                raise
        global lock_retries
        lock_retries += 1
        time.sleep(wait * random.uniform(0.5, 1.5))  # spread the two writers apart
        wait = min(2.0, wait * 2)


def tracking_uri(cfg: MlflowParams, root: Path) -> str:
    """Params, then ``MLFLOW_TRACKING_URI``, then the repo's own sqlite file.

    >>> from embedlab.config import MlflowParams
    >>> tracking_uri(MlflowParams(tracking_uri="http://127.0.0.1:5000"), Path("."))
    'http://127.0.0.1:5000'
    >>> os.environ.pop("MLFLOW_TRACKING_URI", None) and None
    >>> tracking_uri(MlflowParams(), Path("/repo"))
    'sqlite:////repo/mlflow.db'
    """
    uri = cfg.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    return uri or f"sqlite:///{(root / DB_FILE).resolve()}"


def is_local(uri: str) -> bool:
    """True for stores MLflow opens in-process (sqlite, files), False for servers.

    >>> is_local("sqlite:///mlflow.db"), is_local("http://host:5000")
    (True, False)
    """
    return not uri.startswith(("http://", "https://", "databricks"))


def bound_http(cfg: MlflowParams) -> None:
    """Cap MLflow's HTTP timeout and retries (its defaults retry for minutes).

    Values the user exported win; MLflow reads these variables at each request.
    """
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(max(1, cfg.request_timeout))))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(cfg.max_retries))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")


def param_batches(params: Mapping[str, Any]) -> list[list[tuple[str, str]]]:
    """Params as MLflow strings (``None`` -> ``"None"``), in ``log_batch``-sized chunks.

    >>> param_batches({"a.b": 1, "c": None})
    [[('a.b', '1'), ('c', 'None')]]
    """
    items = [(k, str(v)[:MAX_PARAM_LENGTH]) for k, v in params.items()]
    return [items[i : i + MAX_PARAMS_PER_BATCH] for i in range(0, len(items), MAX_PARAMS_PER_BATCH)]


class MlflowTracker(Tracker):
    """One MLflow run per experiment; validate and embed reopen it by id."""

    name = "mlflow"
    batch_seconds = FLUSH_INTERVAL_S
    max_batch = MAX_METRICS_PER_BATCH

    def __init__(self, params: Any, root: Path) -> None:
        super().__init__(params, root)
        self.batch_records = params.tracking.mlflow.flush_every
        self._created: str | None = None
        """A run this tracker created; a retried start resumes it instead of a second one."""

    def start(self, run: RunInfo) -> str:
        cfg = self.params.tracking.mlflow
        bound_http(cfg)
        from mlflow.tracking import MlflowClient

        self.uri = tracking_uri(cfg, self.root)
        self._timeout = self._deadline(cfg)
        # The client creates or migrates a sqlite store's tables; two processes doing it at
        # once break each other ("duplicate column name"): one at a time.
        with sqlite_init_lock(self.uri):
            self.client = MlflowClient(tracking_uri=self.uri)
            run_id = self._call(lambda: self._open(run), "opening the MLflow run")
        self.run_id = run_id
        return run_id

    def _call(self, fn: Callable[[], T], what: str, factor: float = 1.0) -> T:
        """A client call: sqlite locks retried in-process, a server bounded by the deadline."""
        if is_local(self.uri):  # no network to hang on; a lock is waited out
            return retry_locked(fn)
        return call_with_timeout(fn, self._timeout * factor, what)

    @staticmethod
    def _deadline(cfg: MlflowParams) -> float:
        """Longest a blocking call may take: every try times out, plus the backoff."""
        timeout = float(os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT", cfg.request_timeout))
        retries = int(os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", cfg.max_retries))
        return min(30.0, timeout * (retries + 1) + 2.0 * retries) + 5.0

    def permanent(self, error: BaseException) -> bool:
        """A value MLflow refuses (a changed param, a bad name); never a lock or the network."""
        from mlflow.exceptions import MlflowException

        if is_locked(error):
            return False
        if isinstance(error, MlflowException):
            return str(error.error_code) in PERMANENT_CODES
        return super().permanent(error)

    def _open(self, run: RunInfo) -> str:
        from mlflow.entities import Param, RunTag

        client = self.client
        if run.run_id is not None:
            client.update_run(run.run_id, status="RUNNING")
            return run.run_id
        if self._created is None:
            experiment_id = self._experiment_id()
            created = client.create_run(experiment_id, run_name=run.run_name, tags=dict(run.tags))
            self._created = created.info.run_id
        run_id = self._created
        # Logging the same params again is a no-op in MLflow, so a retried start is safe.
        for chunk in param_batches(run.params):
            client.log_batch(run_id, params=[Param(k, v) for k, v in chunk])
        client.log_batch(run_id, tags=[RunTag("stage", run.stage)])
        return run_id

    def _experiment_id(self) -> str:
        from mlflow.exceptions import MlflowException

        experiment = self.params.tracking.experiment
        found = self.client.get_experiment_by_name(experiment)
        if found is not None:
            return found.experiment_id
        location = None
        if is_local(self.uri):  # keep artifacts beside the database, not in the cwd
            location = (self.root / ARTIFACTS_DIR).resolve().as_uri()
        try:
            return self.client.create_experiment(experiment, artifact_location=location)
        except MlflowException:  # another experiment created it a moment ago
            found = self.client.get_experiment_by_name(experiment)
            if found is None:
                raise
            return found.experiment_id

    # -- records, as the hub's worker sends them ---------------------------------------------
    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self.log_metric_steps([(metrics, step, None)])

    def log_metric_steps(
        self, points: Sequence[tuple[Mapping[str, float], int, int | None]]
    ) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        rows = [
            Metric(mlflow_name(k), float(v), ts if ts is not None else now, step)
            for metrics, step, ts in points
            for k, v in metrics.items()
        ]
        for i in range(0, len(rows), MAX_METRICS_PER_BATCH):
            chunk = rows[i : i + MAX_METRICS_PER_BATCH]
            self._call(
                lambda chunk=chunk: self.client.log_batch(self.run_id, metrics=chunk),
                "sending MLflow metrics",
            )

    def log_image(self, key: str, image: Image.Image, step: int) -> None:
        # key + step keeps one picture per validation (MLflow's image slider), no overwrite
        self._call(
            lambda: self.client.log_image(self.run_id, image, key=key, step=step),
            "logging an MLflow image",
        )

    def log_summary(self, metrics: Mapping[str, float]) -> None:
        # Single-valued metrics: MLflow's runs table shows them as columns to sort and
        # compare by, and a later stage's facts add to an earlier one's.
        self.log_metric_steps([(metrics, 0, None)])

    def log_artifact(self, path: Path) -> None:
        path = Path(path)
        files = [path]
        if path.suffix == ".safetensors":  # the weights are only loadable with their config
            files += [p for p in [path.with_suffix(".json")] if p.is_file()]
        folder = "extractor" if path.suffix == ".safetensors" else None

        def upload() -> None:
            for file in files:
                self.client.log_artifact(self.run_id, str(file), artifact_path=folder)

        self._call(upload, "uploading MLflow artifacts", factor=len(files))
        if folder is not None and self.params.tracking.mlflow.register_model:
            self._call(lambda: self._register(folder), "registering the model")

    def _register(self, folder: str) -> None:
        from mlflow.exceptions import MlflowException

        name = self.params.tracking.mlflow.registered_model_name
        try:
            self.client.create_registered_model(name)
        except MlflowException as exc:
            if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
                raise
        source = f"{self.client.get_run(self.run_id).info.artifact_uri}/{folder}"
        self.client.create_model_version(name, source=source, run_id=self.run_id)

    def finish(self) -> None:
        if self.run_id is None or getattr(self, "client", None) is None:
            return
        self._call(lambda: self.client.set_terminated(self.run_id), "closing the MLflow run")
