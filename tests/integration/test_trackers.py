"""Every tracker backend read back offline after one short real train + validate + embed.

The pipeline runs ONCE for the module, with all five backends active, fake credentials
planted in the environment, and every warning and log line captured. Each backend is
then read from its own files with its own tools (or its documented file format):
TensorBoard with ``EventAccumulator``, MLflow with ``MlflowClient`` on sqlite, W&B from
the offline ``.wandb`` transaction log, Neptune from its offline operation log, DVCLive
from its TSV/JSON/PNG files.
"""

from __future__ import annotations

import json
import logging
import struct
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from embedlab.io import read_json
from embedlab.metrics.names import mlflow_name
from embedlab.stages.embed import run_embed
from embedlab.stages.prepare import run_prepare
from embedlab.stages.train import run_train
from embedlab.stages.validate import run_validate
from embedlab.tracking import read_run_ids
from embedlab.tracking.names import curves_and_facts, metric_names
from embedlab.tracking.projection import sample_rows
from tests.conftest import fast_params

pytestmark = [pytest.mark.slow, pytest.mark.integration]

BACKENDS = ["tensorboard", "mlflow", "wandb", "neptune", "dvclive"]
STEP_KEYS = ["train/loss", "train/pos_dist", "train/neg_dist", "train/active_tri", "train/lr"]
FAKE_SECRETS = {
    "WANDB_API_KEY": "fakewandbkey0123456789abcdef0123456789abcd",
    "NEPTUNE_API_TOKEN": "fake-neptune-token-Zq9xY8wV7u",
    "MLFLOW_TRACKING_USERNAME": "fake-mlflow-user-Kp3",
    "MLFLOW_TRACKING_PASSWORD": "fake-mlflow-password-Rt5",
    "MLFLOW_TRACKING_TOKEN": "fake-mlflow-token-Wq8",
}


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """prepare -> train -> validate -> embed once, every backend on; what the tests read back."""
    root = tmp_path_factory.mktemp("trackers")
    params = fast_params(
        tracking__loggers=BACKENDS,
        tracking__neptune={"mode": "offline"},
        tracking__wandb={"mode": "offline"},
        tracking__mlflow={"register_model": True},
        validate__projector={"max_items": 50, "thumbnail_size": 16},  # a sample of the 900
    )
    handler = _Lines()
    logging.getLogger().addHandler(handler)
    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mp.chdir(root)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.setenv("DVC_EXP_NAME", "exp-lr-high")
        for name, value in FAKE_SECRETS.items():
            mp.setenv(name, value)
        run_prepare(params, root)
        train_report = run_train(params, root)
        metrics = run_validate(params, root)
        embedded = run_embed(params, root)
    logging.getLogger().removeHandler(handler)
    curves, facts = curves_and_facts(metrics)
    # The baseline's numbers and embed's are facts too, joined in one summary.
    baseline = read_json(root / "reports" / "metrics_all.json")["baseline/raw_pixels"]
    facts.update({f"baseline/raw_pixels/OVERALL/{k}": v for k, v in baseline.items()})
    facts.update({"embed/rows": float(embedded["rows"]), "embed/dim": float(embedded["dim"])})
    return {
        "root": root,
        "params": params,
        "run_ids": read_run_ids(root),
        "run_json": read_json(root / "reports" / "run.json"),
        "steps": train_report["global_step"],
        "final": metric_names(metrics),
        "validation_rows": np.flatnonzero(
            pd.read_csv(root / "data" / "prepared" / "manifest.csv")["split"] == "validation"
        ),
        "curves": curves,
        "facts": facts,
        "warnings": [str(w.message) for w in caught],
        "log_lines": handler.lines,
    }


def test_one_run_per_experiment_and_no_failures(pipeline: dict[str, Any]) -> None:
    assert pipeline["run_json"]["failed"] == {}
    assert set(pipeline["run_ids"]) == set(BACKENDS)
    assert not [w for w in pipeline["warnings"] if "tracker '" in w]
    # validate logged into the train runs: no second run anywhere
    root, ids = pipeline["root"], pipeline["run_ids"]
    assert [p.name for p in (root / "logs" / "tensorboard").iterdir()] == [ids["tensorboard"]]
    assert ids["dvclive"] == "exp-lr-high"


def test_tensorboard(pipeline: dict[str, Any]) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    from embedlab.tracking.tensorboard import HPARAM_METRICS

    run_dir = pipeline["root"] / "logs" / "tensorboard" / pipeline["run_ids"]["tensorboard"]
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    steps = pipeline["steps"]
    for key in STEP_KEYS:
        assert [e.step for e in acc.Scalars(key)] == list(range(steps)), key
    cmc = acc.Scalars("val/OVERALL/cmc@1")
    assert [e.step for e in cmc] == [0, steps, steps]  # before training, after epoch 1, validate
    assert cmc[-1].value == pytest.approx(pipeline["final"]["val/OVERALL/cmc@1"])
    for key in ("val/predictions", "val/worst_queries"):
        assert [e.step for e in acc.Images(key)] == [0, steps, steps]
    # The page opens on curves: train/ and val/ only, no one-point cards (facts, hparam/)
    scalars = acc.Tags()["scalars"]
    assert {tag.split("/")[0] for tag in scalars} == {"train", "val"}
    assert sorted(t for t in scalars if t.startswith("val/")) == sorted(pipeline["curves"])
    assert all(len(acc.Scalars(tag)) > 1 for tag in scalars)
    # HPARAMS view: params registered once, the headline curves as its metric columns
    plugin = acc.PluginTagToContent("hparams")
    infos = [plugin_data_pb2.HParamsPluginData.FromString(v) for v in plugin.values()]
    session = next(i.session_start_info for i in infos if i.HasField("session_start_info"))
    assert session.hparams["train.optimizer.lr"].number_value == pytest.approx(0.001)
    experiment = next(i.experiment for i in infos if i.HasField("experiment"))
    assert [m.name.tag for m in experiment.metric_infos] == list(HPARAM_METRICS)
    # The facts of every stage, merged: the summary file and the last summary card
    summary = json.loads((run_dir / "summary.json").read_text())["facts"]
    assert_facts(summary, pipeline["facts"])
    assert set(summary) == {*pipeline["facts"], "embed/images_per_s"}
    card = acc.Tensors("summary/text_summary")[-1].tensor_proto.string_val[0].decode()
    for key in pipeline["facts"]:
        assert f"| {key} |" in card
    # PROJECTOR: a seeded sample of 50 validation items, with metadata and a sprite
    from google.protobuf import text_format
    from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig

    config = text_format.Parse((run_dir / "projector_config.pbtxt").read_text(), ProjectorConfig())
    (entry,) = config.embeddings
    assert entry.tensor_name == f"val/embeddings:{steps:05d}"
    vectors = np.loadtxt(run_dir / entry.tensor_path, delimiter="\t")
    assert vectors.shape == (50, 32)
    header, *rows = (run_dir / entry.metadata_path).read_text().splitlines()
    assert header.split("\t") == ["row_id", "label", "category", "role", "path"]
    validation = pipeline["validation_rows"]
    expected = validation[sample_rows(len(validation), 50, pipeline["params"].seed)]
    assert [int(r.split("\t")[0]) for r in rows] == expected.tolist()
    assert Image.open(run_dir / entry.sprite.image_path).size == (8 * 16, 8 * 16)


def test_tensorboard_server_opens_on_curves(pipeline: dict[str, Any]) -> None:
    """A real TensorBoard serving the run: what its pages ask for, as a browser would."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.parse
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    logdir = pipeline["root"] / "logs" / "tensorboard"
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir)]
    server = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", str(port), "--load_fast", "false"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/data/plugin"
    statuses = ["UNKNOWN", "SUCCESS", "FAILURE", "RUNNING"]
    allowed = [f"STATUS_{s}" for s in statuses]

    def get(path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(base + path, data=data)
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.loads(answer.read())

    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                tags = get("/scalars/tags")
                if tags:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "TensorBoard did not answer in 60 s"
            time.sleep(0.5)
        run = pipeline["run_ids"]["tensorboard"]
        # Cards are grouped by the tag's first part, groups in name order: train/, val/
        groups = sorted({tag.split("/")[0] for tag in tags[run]})
        assert groups == ["train", "val"]
        sessions = get(
            "/hparams/session_groups",
            {"startIndex": 0, "sliceSize": 10, "allowedStatuses": allowed},
        )
        group = next(g for g in sessions["sessionGroups"] if g["name"] == run)
        values = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}
        final = pipeline["final"]["val/OVERALL/cmc@1"]
        assert values["val/OVERALL/cmc@1"] == pytest.approx(final, abs=1e-6)
        assert group["hparams"]["train.optimizer.lr"] == pytest.approx(0.001)
        # the PROJECTOR tab lists the run's embeddings and serves their vectors
        info = get(f"/projector/info?run={run}")
        names = [e["tensorName"] for e in info["embeddings"]]
        assert names == [f"val/embeddings:{pipeline['steps']:05d}"]
        query = f"run={run}&name={urllib.parse.quote(names[0])}"
        with urllib.request.urlopen(f"{base}/projector/tensor?{query}", timeout=10) as answer:
            assert len(answer.read()) == 50 * 32 * 4  # float32 rows of the sample
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_mlflow(pipeline: dict[str, Any]) -> None:
    from mlflow.tracking import MlflowClient

    root, run_id, steps = pipeline["root"], pipeline["run_ids"]["mlflow"], pipeline["steps"]
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "exp-lr-high"
    assert run.data.params["train.optimizer.lr"] == "0.001"
    assert set(run.data.params) == set(pipeline["params"].flat())
    assert run.data.tags["dvc_exp_name"] == "exp-lr-high"
    assert run.data.tags["params_hash"] == pipeline["params"].short_hash()
    assert run.data.tags["git_commit"]
    for key in STEP_KEYS:
        assert [m.step for m in client.get_metric_history(run_id, key)] == list(range(steps))
    for name, value in pipeline["curves"].items():
        history = client.get_metric_history(run_id, mlflow_name(name))
        assert sorted(m.step for m in history) == [0, steps, steps], name
        assert run.data.metrics[mlflow_name(name)] == pytest.approx(value)
    for name, value in pipeline["facts"].items():  # one value each: a runs-table column
        history = client.get_metric_history(run_id, mlflow_name(name))
        assert [(m.step, m.value) for m in history] == [(0, pytest.approx(value))], name
    top = {a.path for a in client.list_artifacts(run_id)}
    assert {"extractor", "metrics.json", "images"} <= top
    assert {a.path for a in client.list_artifacts(run_id, "extractor")} == {
        "extractor/extractor.safetensors",
        "extractor/extractor.json",
    }
    pngs = [a.path for a in client.list_artifacts(run_id, "images") if a.path.endswith(".png")]
    for key in ("val~predictions", "val~worst_queries"):  # one picture per validation, kept
        assert sorted(int(p.split("+step+")[1].split("+")[0]) for p in pngs if key in p) == [
            0,
            steps,
            steps,
        ]
    versions = client.search_model_versions("name='embedlab-extractor'")
    assert [v.run_id for v in versions] == [run_id]


def test_wandb(pipeline: dict[str, Any]) -> None:
    run_id, steps = pipeline["run_ids"]["wandb"], pipeline["steps"]
    rows, config, tags, summary = wandb_history(pipeline["root"] / "logs" / "wandb", run_id)
    for key in STEP_KEYS:
        assert [r["trainer/global_step"] for r in rows if key in r] == list(range(steps)), key
    cmc = [
        (r["trainer/global_step"], r["val/OVERALL/cmc@1"]) for r in rows if "val/OVERALL/cmc@1" in r
    ]
    assert [s for s, _ in cmc] == [0, steps, steps]
    assert cmc[-1][1] == pytest.approx(pipeline["final"]["val/OVERALL/cmc@1"])
    folder = pipeline["root"] / "logs" / "wandb"
    for key in ("val/predictions", "val/worst_queries"):  # nested image items: <key>/path...
        images = [(r["trainer/global_step"], r) for r in rows if f"{key}/_type" in r]
        assert [s for s, _ in images] == [0, steps, steps]
        for _, row in images:
            assert row[f"{key}/_type"] == "image-file"
            assert list(folder.glob(f"*{run_id}/files/{row[f'{key}/path']}")), row[f"{key}/path"]
    assert config["train.optimizer.lr"] == pytest.approx(0.001)
    assert config["tags.params_hash"] == pipeline["params"].short_hash()
    assert "dvc_exp_name:exp-lr-high" in tags
    assert_facts(summary, pipeline["facts"])
    (table,) = [r for r in rows if "val/embeddings/_type" in r]  # the embeddings table
    assert table["val/embeddings/_type"] == "table-file"
    assert table["trainer/global_step"] == steps
    (path,) = folder.glob(f"*{run_id}/files/{table['val/embeddings/path']}")
    content = json.loads(path.read_text())
    assert content["columns"] == [
        "row_id",
        "label",
        "category",
        "role",
        "path",
        "image",
        "embedding",
    ]
    assert len(content["data"]) == 50 and len(content["data"][0][-1]) == 32
    files = {
        p.name for p in (pipeline["root"] / "logs" / "wandb").glob(f"*{run_id}/files/artifacts/*")
    }
    assert files == {"extractor.safetensors", "extractor.json", "metrics.json"}


def test_neptune(pipeline: dict[str, Any]) -> None:
    run_id, steps = pipeline["run_ids"]["neptune"], pipeline["steps"]
    ops = neptune_operations(pipeline["root"] / "logs" / "neptune", run_id)
    assert ops, "no offline Neptune container for the run"

    def series(path: str, kind: str) -> list[tuple[float, Any]]:
        return [
            (v["step"], v["value"])
            for op in ops
            if op["type"] == kind and op["path"] == path.split("/")
            for v in op["values"]
        ]

    for key in STEP_KEYS:
        assert [s for s, _ in series(key, "LogFloats")] == list(range(steps)), key
    cmc = series("val/OVERALL/cmc@1", "LogFloats")
    assert [s for s, _ in cmc] == [0, steps, steps]
    assert cmc[-1][1] == pytest.approx(pipeline["final"]["val/OVERALL/cmc@1"])
    for key in ("val/predictions", "val/worst_queries"):
        assert [s for s, _ in series(key, "LogImages")] == [0, steps, steps]
    assigned = {
        "/".join(op["path"]): op.get("value") for op in ops if op["type"].startswith("Assign")
    }
    assert assigned["parameters/train.optimizer.lr"] == pytest.approx(0.001)
    assert assigned["embedlab/tags/dvc_exp_name"] == "exp-lr-high"
    assert assigned["sys/name"] == "exp-lr-high"
    summary = {
        k.removeprefix("summary/"): v for k, v in assigned.items() if k.startswith("summary/")
    }
    assert_facts(summary, pipeline["facts"])
    uploads = {"/".join(op["path"]) for op in ops if op["type"] == "UploadFile"}
    assert uploads == {"artifacts/extractor", "artifacts/metrics"}


def test_dvclive(pipeline: dict[str, Any]) -> None:
    root, steps = pipeline["root"], pipeline["steps"]
    train = root / "dvclive" / "train"
    for key in STEP_KEYS:
        rows = (train / "plots" / "metrics" / f"{key}.tsv").read_text().splitlines()
        assert rows[0].split("\t") == ["step", key.split("/")[-1]]
        assert [int(r.split("\t")[0]) for r in rows[1:]] == list(range(steps)), key
    cmc = (train / "plots" / "metrics" / "val" / "OVERALL" / "cmc@1.tsv").read_text().splitlines()
    assert [int(r.split("\t")[0]) for r in cmc[1:]] == [0, steps]
    for key in ("predictions", "worst_queries"):
        pictures = sorted(p.name for p in (train / "plots" / "images" / "val" / key).iterdir())
        assert pictures == ["000000.png", f"{steps:06d}.png"]
    summary = read_json(root / "dvclive" / "validate" / "metrics.json")
    assert summary["val"]["OVERALL"]["cmc@1"] == pytest.approx(
        pipeline["final"]["val/OVERALL/cmc@1"]
    )
    assert "loss" in read_json(train / "metrics.json")["train"]
    assert (root / "dvclive" / "validate" / "plots" / "images" / "val" / "predictions").is_dir()
    assert not (root / "dvc.yaml").exists()  # dvcyaml=False: nothing rewritten or created


def test_credentials_never_written_or_logged(pipeline: dict[str, Any]) -> None:
    secrets = [v.encode() for v in FAKE_SECRETS.values()]
    leaks = []
    for path in pipeline["root"].rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            leaks += [f"{path}: {s.decode()}" for s in secrets if s in data]
    text = "\n".join(pipeline["log_lines"] + pipeline["warnings"])
    leaks += [s.decode() for s in secrets if s.decode() in text]
    assert leaks == []


# --- readers ------------------------------------------------------------------------------
def assert_facts(summary: dict[str, Any], facts: dict[str, float]) -> None:
    """Every stage's facts reached the run's summary, merged (embed's speed varies)."""
    assert {k: summary.get(k) for k in facts} == pytest.approx(facts)
    assert summary["embed/images_per_s"] > 0


WANDB_HEADER = 7  # ":W&B" + magic 0xBEE1 + version
BLOCK = 32768  # LevelDB log block size
RECORD_HEADER = 7  # crc32c (4) + length (2) + type (1)
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def wandb_records(path: Path) -> Iterator[Any]:
    """Every protobuf ``Record`` of a ``.wandb`` transaction log (LevelDB log format).

    wandb 0.31 moved its own reader into the Go core; the format is LevelDB's log:
    32 KiB blocks of (crc, length, type) chunks, records split across blocks.
    """
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    pos, pending = WANDB_HEADER, b""
    while pos + RECORD_HEADER <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < RECORD_HEADER:  # block trailer padding
            pos += left_in_block
            continue
        length, kind = struct.unpack_from("<HB", data, pos + 4)
        chunk = data[pos + RECORD_HEADER : pos + RECORD_HEADER + length]
        pos += RECORD_HEADER + length
        if kind == 0 and length == 0:  # zero padding at the end of a block
            continue
        pending = chunk if kind in (FULL, FIRST) else pending + chunk
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString(pending)
            yield record
            pending = b""


def wandb_history(
    folder: Path, run_id: str
) -> tuple[list[dict[str, Any]], dict[str, Any], list[str], dict[str, Any]]:
    """(history rows, config, tags, summary updates) of every offline folder of ``run_id``
    (one per stage); the summary holds only what was set explicitly (``run.summary``)."""
    rows: list[dict[str, Any]] = []
    config: dict[str, Any] = {}
    tags: list[str] = []
    summary: dict[str, Any] = {}
    for log in sorted(folder.glob(f"offline-run-*-{run_id}*/run-{run_id}.wandb")):
        for record in wandb_records(log):
            kind = record.WhichOneof("record_type")
            if kind == "history":
                rows.append(
                    {
                        item.key or "/".join(item.nested_key): json.loads(item.value_json)
                        for item in record.history.item
                    }
                )
            elif kind == "config":
                for item in record.config.update:
                    config[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
            elif kind == "summary":
                for item in record.summary.update:
                    summary[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
            elif kind == "run":  # the initial config travels with the run record
                tags.extend(record.run.tags)
                for item in record.run.config.update:
                    config[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return rows, config, tags, summary


def neptune_operations(folder: Path, custom_run_id: str) -> list[dict[str, Any]]:
    """Operations of every offline Neptune container that belongs to ``custom_run_id``."""
    ops: list[dict[str, Any]] = []

    def created(log: Path) -> str:
        return json.loads((log.parent / "metadata.json").read_text())["createdAt"]

    for log in sorted(folder.glob("offline/run__*/data-*.log"), key=created):
        container = [json.loads(line)["obj"] for line in log.read_text().splitlines() if line]
        ids = [
            op.get("value") for op in container if op.get("path") == ["embedlab", "custom_run_id"]
        ]
        if custom_run_id in ids:
            ops.extend(container)
    return ops


def test_raw_pixel_baseline_reaches_metrics_json_and_the_trackers(pipeline: dict[str, Any]) -> None:
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from embedlab.data.datasets import DatasetQueryGallery
    from embedlab.data.manifest import load_manifest
    from embedlab.metrics import MetricOptions
    from embedlab.metrics.baseline import raw_pixel_table
    from embedlab.retrieval import QueryGallery

    root = pipeline["root"]
    report = read_json(root / "reports" / "metrics.json")
    baseline = read_json(root / "reports" / "metrics_all.json")["baseline/raw_pixels"]
    # the same queries and gallery as the model, scored on the raw pixels
    manifest = load_manifest(root / "data" / "prepared" / "manifest.csv")
    dataset = DatasetQueryGallery(manifest.split("validation"), manifest.dataset_root)
    columns = dataset.columns()
    items = QueryGallery.from_columns(
        np.zeros((len(dataset), 1), dtype=np.float32),  # replaced by the pixels
        columns["labels"],
        is_query=columns["is_query"],
        is_gallery=columns["is_gallery"],
        sequence=columns["sequence"],
    )
    expected = raw_pixel_table(items, dataset.read_image, MetricOptions()).metrics["OVERALL"]
    assert baseline["cmc@1"] == pytest.approx(expected["cmc"][1])
    assert baseline["map@5"] == pytest.approx(expected["map"][5])
    assert report["baseline/raw_pixels/n_queries"] == report["n_queries"]

    key = "baseline/raw_pixels/OVERALL/cmc@1"
    run_dir = root / "logs" / "tensorboard" / pipeline["run_ids"]["tensorboard"]
    assert key not in EventAccumulator(str(run_dir)).Reload().Tags()["scalars"]  # a fact
    facts = json.loads((run_dir / "summary.json").read_text())["facts"]
    assert facts[key] == pytest.approx(expected["cmc"][1])
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    run = client.get_run(pipeline["run_ids"]["mlflow"])
    assert run.data.metrics[mlflow_name(key)] == pytest.approx(expected["cmc"][1])
