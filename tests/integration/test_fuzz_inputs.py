"""Random params.yaml edits and random manifest CSVs never end a stage in a traceback.

Every outcome is either success (exit 0) or exactly one ``error: ...`` line with exit 2,
and a failed stage leaves its earlier outputs as they were. The stages run in-process
through ``embedlab.stages.main`` in a temporary repo root: prepare on each input (the
``csv`` source over eight tiny images); train, validate and embed on random edits of the
params each of them reads (its ``dvc.yaml`` params), over a 1-block ViT on 16-px images.
Most bad values are refused when params.yaml is read, so most examples take milliseconds.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from embedlab.stages import main
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow

DEFAULT = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
IMAGES = [f"imgs/{i}.png" for i in range(8)]
GOOD_CSV = "label,path,split\n" + "".join(
    f"{i // 2},{path},{'train' if i < 4 else 'validation'}\n" for i, path in enumerate(IMAGES)
)

VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.lists(st.integers(-3, 10), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
    # edges of the usual ranges: counts, sizes, shares, seeds and names
    st.sampled_from([0, -1, 1, 2, 3, 10**6, 2**31, 2**32, 0.0, -0.5, 1.5, 1e9, "", "auto", "none"]),
)


def _paths(tree: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [prefix] if prefix else []
    if isinstance(tree, dict):
        for key, value in tree.items():
            out += _paths(value, (*prefix, str(key)))
    return out


KEYS = _paths(DEFAULT)


@st.composite
def edited_params(draw: st.DrawFn) -> dict[str, Any]:
    raw = yaml.safe_load(yaml.safe_dump(DEFAULT))
    raw["prepare"].update(source="csv", root="input/mine.csv")
    raw["tracking"]["loggers"] = ["csv"]
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(KEYS))
        node = raw
        for key in path[:-1]:
            node = node.setdefault(key, {}) if isinstance(node, dict) else {}
        if not isinstance(node, dict):
            continue
        if draw(st.booleans()):
            node[path[-1]] = draw(VALUES)
        elif draw(st.booleans()):
            node.pop(path[-1], None)
        else:
            node[draw(st.text(min_size=1, max_size=8))] = draw(VALUES)
    return raw


CELLS = st.one_of(
    st.text(max_size=10),
    st.integers(-(10**20), 10**20).map(str),
    st.floats(allow_nan=True).map(str),
    st.sampled_from(["", "true", "validation", "train", *IMAGES, "../x.png", "imgs/nope.png"]),
)
COLUMNS = ["label", "path", "split", "is_query", "is_gallery", "category", "x_1", "x_2", "zz"]


@st.composite
def manifest_bytes(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["empty", "garbage", "table", "good-edited"]))
    if kind == "empty":
        return b""
    if kind == "garbage":
        return draw(st.binary(max_size=200))
    if kind == "good-edited":
        lines = GOOD_CSV.splitlines()
        row = draw(st.integers(0, len(lines) - 1))
        lines[row] = ",".join(draw(st.lists(CELLS, min_size=1, max_size=5)))
        text = "\n".join(lines) + "\n"
    else:
        header = draw(st.lists(st.sampled_from(COLUMNS), min_size=1, max_size=6, unique=True))
        rows = draw(
            st.lists(st.lists(CELLS, min_size=len(header), max_size=len(header)), max_size=8)
        )
        text = "\n".join([",".join(header), *(",".join(r) for r in rows)]) + "\n"
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "latin-1", "utf-16"]))
    return text.encode(encoding, errors="replace")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzz")
    (root / "input" / "imgs").mkdir(parents=True)
    for i, path in enumerate(IMAGES):
        Image.new("RGB", (16, 16), (20 * i, 60, 90)).save(root / "input" / path)
    return root


def _outcome(root: Path, params: dict[str, Any], csv: bytes, capsys: Any) -> int:
    old = os.getcwd()
    os.chdir(root)
    try:
        Path("params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True))
        Path("input/mine.csv").write_bytes(csv)
        capsys.readouterr()
        rc = main("prepare")
        err = capsys.readouterr().err
    finally:
        os.chdir(old)
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert rc in (0, 2), err
    if rc == 2:
        assert len(errors) == 1, err
    return rc


def _csv_params() -> dict[str, Any]:
    params = yaml.safe_load(yaml.safe_dump(DEFAULT))
    params["prepare"].update(source="csv", root="input/mine.csv")
    params["tracking"]["loggers"] = ["csv"]
    return params


def test_the_unedited_inputs_succeed(root: Path, capsys: Any) -> None:
    assert _outcome(root, _csv_params(), GOOD_CSV.encode(), capsys) == 0


FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ
@given(params=edited_params())
def test_random_params_edits(root: Path, params: dict[str, Any], capsys: Any) -> None:
    _outcome(root, params, GOOD_CSV.encode(), capsys)


@FUZZ
@given(csv=manifest_bytes())
def test_random_manifest_csvs(root: Path, csv: bytes, capsys: Any) -> None:
    _outcome(root, _csv_params(), csv, capsys)


# --- train, validate, embed ------------------------------------------------------------------
TINY = {
    "arch": "vit_tiny_patch16_224",
    "input_size": None,
    "timm_kwargs": {"img_size": 16, "patch_size": 8, "depth": 1, "embed_dim": 16, "num_heads": 2},
}
STAGE_PARAMS = {
    name: stage.get("params", [])
    for name, stage in yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"].items()
}
OUTPUTS = {
    "train": ["models/extractor.safetensors", "models/extractor.json", "reports/train.json"],
    "validate": ["reports/metrics.json", "reports/metrics_all.json", "reports/per_query.csv"],
    "embed": ["data/embeddings/embeddings.npy", "data/embeddings/info.json"],
}
# Legitimate values of these start processes (DataLoader workers, one process per device,
# nodes that never come): test_config.py checks their ranges instead.
NOT_FUZZED = ("num_workers", "train.trainer.devices", "train.trainer.num_nodes")


def _tiny_params() -> dict[str, Any]:
    params = _csv_params()
    train = params["train"]
    train["model"].update(TINY)
    train["sampler"].update(n_labels=2, n_instances=2)
    train.update(max_epochs=1, val_every_n_epochs=1, log_images=False)
    params["validate"].update(batch_size=4)
    params["validate"]["images"].update(n_queries=1, n_worst=1, top_k=2)
    params["validate"]["projector"]["max_items"] = 0
    params["embed"].update(batch_size=4)
    return params


def _stage_keys(stage: str) -> list[tuple[str, ...]]:
    """The params.yaml keys ``stage`` declares in dvc.yaml, less :data:`NOT_FUZZED`."""
    declared = [tuple(p.split(".")) for p in STAGE_PARAMS[stage]]
    return [
        key
        for key in KEYS
        if any(key[: len(d)] == d for d in declared)
        and not any(part in ".".join(key) for part in NOT_FUZZED)
    ]


@st.composite
def stage_edits(draw: st.DrawFn, stage: str) -> dict[str, Any]:
    raw = _tiny_params()
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_stage_keys(stage)))
        node = raw
        for key in path[:-1]:
            node = node.setdefault(key, {}) if isinstance(node, dict) else {}
        if not isinstance(node, dict):
            continue
        if draw(st.integers(0, 3)):
            node[path[-1]] = draw(near(node.get(path[-1])))
        else:
            node.pop(path[-1], None)
    return raw


@st.composite
def typo(draw: st.DrawFn, word: str) -> str:
    """``word`` with one character dropped, doubled or changed (``cpu`` -> ``cpuu``)."""
    at = draw(st.integers(0, max(len(word) - 1, 0)))
    change = draw(st.sampled_from(["drop", "double", "swap"]))
    if change == "drop":
        return word[:at] + word[at + 1 :]
    if change == "double":
        return word[: at + 1] + word[at:]
    return word[:at] + draw(st.characters(codec="ascii")) + word[at + 1 :]


def near(value: Any) -> st.SearchStrategy[Any]:
    """Values a user could plausibly write instead of ``value``: same type, edges, typos,
    and now and then anything at all."""
    if isinstance(value, bool):
        own: st.SearchStrategy[Any] = st.sampled_from([not value, "yes", 1, None])
    elif isinstance(value, int):
        own = st.one_of(st.integers(-3, 1000), st.sampled_from([0, -1, 10**5, 2**31, 2.5]))
    elif isinstance(value, float):
        own = st.one_of(st.floats(-2.0, 1000.0), st.sampled_from([0.0, -0.0, 1.0, 1e9]))
    elif isinstance(value, str):
        own = st.one_of(typo(value), st.sampled_from(["", value.upper(), " " + value]))
    elif isinstance(value, list):
        own = st.lists(near(value[0]) if value else VALUES, max_size=3)
    else:
        own = VALUES
    return st.one_of(own, own, own, VALUES)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A repo root after prepare, train, validate and embed with the tiny params."""
    root = tmp_path_factory.mktemp("fuzz-stages")
    (root / "input" / "imgs").mkdir(parents=True)
    for i, path in enumerate(IMAGES):
        Image.new("RGB", (16, 16), (20 * i, 60, 90)).save(root / "input" / path)
    (root / "input" / "mine.csv").write_text(GOOD_CSV)
    (root / "params.yaml").write_text(yaml.safe_dump(_tiny_params()))
    old = os.getcwd()
    os.chdir(root)
    try:
        for stage in ("prepare", "train", "validate", "embed"):
            assert main(stage) == 0, stage
    finally:
        os.chdir(old)
    yield root


@pytest.fixture
def few_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """Training stops after 2 steps, whatever max_epochs says (the stage is otherwise real)."""
    import embedlab.stages.train as train_stage

    real = train_stage.build_trainer
    monkeypatch.setattr(
        train_stage, "build_trainer", lambda cfg, **kw: real(cfg, **{**kw, "max_steps": 2})
    )


def _stage_outcome(root: Path, stage: str, params: dict[str, Any], capsys: Any) -> int:
    old = os.getcwd()
    os.chdir(root)
    try:
        Path("params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True))
        before = {name: Path(name).read_bytes() for name in OUTPUTS[stage]}
        capsys.readouterr()
        rc = main(stage)
        err = capsys.readouterr().err
        after = {name: Path(name).read_bytes() for name in OUTPUTS[stage] if Path(name).is_file()}
    finally:
        os.chdir(old)
    assert "Traceback" not in err
    assert rc in (0, 2), err
    if rc == 2:
        assert len([line for line in err.splitlines() if line.startswith("error: ")]) == 1, err
        assert after == before, "a failed stage changed its earlier outputs"
    else:
        assert set(after) == set(before)
    return rc


STAGE_FUZZ = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.mark.parametrize("stage", ["train", "validate", "embed"])
def test_the_unedited_stage_params_succeed(
    trained: Path, few_steps: None, stage: str, capsys: Any
) -> None:
    assert _stage_outcome(trained, stage, _tiny_params(), capsys) == 0


@STAGE_FUZZ
@given(params=stage_edits("train"))
def test_random_train_params(trained: Path, few_steps: None, params: dict, capsys: Any) -> None:
    _stage_outcome(trained, "train", params, capsys)


@STAGE_FUZZ
@given(params=stage_edits("validate"))
def test_random_validate_params(trained: Path, params: dict, capsys: Any) -> None:
    _stage_outcome(trained, "validate", params, capsys)


@STAGE_FUZZ
@given(params=stage_edits("embed"))
def test_random_embed_params(trained: Path, params: dict, capsys: Any) -> None:
    _stage_outcome(trained, "embed", params, capsys)
