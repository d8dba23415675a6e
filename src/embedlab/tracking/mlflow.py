"""MLflow backend on ``MlflowClient`` with explicit run ids (no global active run).

The tracking URI comes from ``tracking.mlflow.tracking_uri``, else ``MLFLOW_TRACKING_URI``,
else ``sqlite:///<repo root>/mlflow.db`` (MLflow 3's own default store, made absolute so a
stage run from anywhere finds the same database). The same code talks to a remote
``mlflow server``; its HTTP timeout and retries are bounded so a dead server costs
seconds, not minutes. Step metrics are buffered and sent with ``log_batch`` on a
background thread so that a slow server never slows a training step.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

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


def mlflow_name(name: str) -> str:
    """MLflow refuses ``@`` in metric names: ``cmc@1`` is logged as ``cmc_at_1``.

    >>> mlflow_name("val/OVERALL/cmc@1"), mlflow_name("train/loss")
    ('val/OVERALL/cmc_at_1', 'train/loss')
    """
    return name.replace("@", "_at_")


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

    def start(self, run: RunInfo) -> str:
        cfg = self.params.tracking.mlflow
        bound_http(cfg)
        from mlflow.tracking import MlflowClient

        self.uri = tracking_uri(cfg, self.root)
        self.client = MlflowClient(tracking_uri=self.uri)
        self._timeout = self._deadline(cfg)
        self._buffer: list[Any] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._steps_since_flush = 0
        self._flush_every = cfg.flush_every
        run_id = call_with_timeout(lambda: self._open(run), self._timeout, "opening the MLflow run")
        self.run_id = run_id
        self._thread = threading.Thread(
            target=self._flush_loop, name="embedlab-mlflow", daemon=True
        )
        self._thread.start()
        return run_id

    @staticmethod
    def _deadline(cfg: MlflowParams) -> float:
        """Longest a blocking call may take: every try times out, plus the backoff."""
        timeout = float(os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT", cfg.request_timeout))
        retries = int(os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", cfg.max_retries))
        return min(30.0, timeout * (retries + 1) + 2.0 * retries) + 5.0

    def _open(self, run: RunInfo) -> str:
        from mlflow.entities import Param, RunTag

        client = self.client
        if run.run_id is not None:
            client.update_run(run.run_id, status="RUNNING")
            return run.run_id
        experiment = self.params.tracking.experiment
        found = client.get_experiment_by_name(experiment)
        if found is not None:
            experiment_id = found.experiment_id
        else:
            location = None
            if is_local(self.uri):  # keep artifacts beside the database, not in the cwd
                location = (self.root / ARTIFACTS_DIR).resolve().as_uri()
            experiment_id = client.create_experiment(experiment, artifact_location=location)
        created = client.create_run(experiment_id, run_name=run.run_name, tags=dict(run.tags))
        run_id = created.info.run_id
        for chunk in param_batches(run.params):
            client.log_batch(run_id, params=[Param(k, v) for k, v in chunk])
        client.log_batch(run_id, tags=[RunTag("stage", run.stage)])
        return run_id

    # -- metrics: buffered, sent by the background thread ------------------------------
    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        if self._error is not None:  # a background send failed: let the hub skip us
            raise self._error
        now = int(time.time() * 1000)
        rows = [Metric(mlflow_name(k), float(v), now, step) for k, v in metrics.items()]
        with self._lock:
            self._buffer.extend(rows)
        self._steps_since_flush += 1
        if self._steps_since_flush >= self._flush_every:
            self._steps_since_flush = 0
            self._wake.set()

    def _send(self) -> None:
        with self._lock:
            rows, self._buffer = self._buffer, []
        for i in range(0, len(rows), MAX_METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=rows[i : i + MAX_METRICS_PER_BATCH])

    def _flush_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(FLUSH_INTERVAL_S)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self._send()
            except Exception as exc:  # surfaced on the next call, from the caller's thread
                self._error = exc
                return

    def flush(self) -> None:
        """Send everything buffered now (bounded by the HTTP deadline)."""
        if self._error is not None:
            raise self._error
        call_with_timeout(self._send, self._timeout, "sending MLflow metrics")

    # -- images, summary, artifacts: rare, sent at once ----------------------------------
    def log_image(self, key: str, image: Image.Image, step: int) -> None:
        if self._error is not None:
            raise self._error
        # key + step keeps one picture per validation (MLflow's image slider), no overwrite
        call_with_timeout(
            lambda: self.client.log_image(self.run_id, image, key=key, step=step),
            self._timeout,
            "logging an MLflow image",
        )

    def log_summary(self, metrics: Mapping[str, float]) -> None:
        summary = {k: float(v) for k, v in metrics.items()}  # a JSON file takes any name
        call_with_timeout(
            lambda: self.client.log_dict(self.run_id, summary, "summary.json"),
            self._timeout,
            "logging the MLflow summary",
        )

    def log_artifact(self, path: Path) -> None:
        path = Path(path)
        files = [path]
        if path.suffix == ".safetensors":  # the weights are only loadable with their config
            files += [p for p in [path.with_suffix(".json")] if p.is_file()]
        folder = "extractor" if path.suffix == ".safetensors" else None

        def upload() -> None:
            for file in files:
                self.client.log_artifact(self.run_id, str(file), artifact_path=folder)

        call_with_timeout(upload, self._timeout * len(files), "uploading MLflow artifacts")
        if folder is not None and self.params.tracking.mlflow.register_model:
            call_with_timeout(
                lambda: self._register(folder), self._timeout, "registering the model"
            )

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
        thread = getattr(self, "_thread", None)
        if thread is None:
            return
        self._stop.set()
        self._wake.set()
        thread.join(timeout=self._timeout)
        if self._error is None:
            self.flush()
            call_with_timeout(
                lambda: self.client.set_terminated(self.run_id),
                self._timeout,
                "closing the MLflow run",
            )
        self._thread = None
