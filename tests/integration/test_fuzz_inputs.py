"""Random params.yaml edits and random manifest CSVs never end a stage in a traceback.

Every outcome is either success (exit 0) or exactly one ``error: ...`` line with exit 2.
The stages run in-process through ``embedlab.stages.main`` in a temporary repo root;
prepare runs for real on each input (the ``csv`` source over four tiny images).
"""

from __future__ import annotations

import os
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
