"""`embedlab search` and `embedlab export` end to end on a tiny embedded workspace."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from embedlab import cli
from embedlab.cli import main
from embedlab.embedding.searcher import GALLERY_CHOICES, Searcher
from embedlab.models.export import FORMATS
from embedlab.viz import draw_retrieval_grid
from tests.unit.test_searcher import make_workspace


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    make_workspace(root)
    return root


@pytest.fixture
def in_repo(repo: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(repo)
    return repo


def parse_tables(text: str) -> dict[str, list[tuple[int, str, int, float]]]:
    """``{query: [(rank, path, label, distance), ...]}`` from the printed tables."""
    tables: dict[str, list[tuple[int, str, int, float]]] = {}
    current = ""
    for line in text.splitlines():
        if line.startswith("query: "):
            current = line.removeprefix("query: ")
            tables[current] = []
        elif line and line.split()[0].isdigit():
            rank, path, label, distance = line.split()
            tables[current].append((int(rank), path, int(label), float(distance)))
    return tables


def test_search_prints_one_table_per_image_of_a_folder(
    in_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = Path("data/prepared/images/2")
    assert main(["search", str(folder), "--top-k", "3", "--gallery", "validation"]) == 0
    out = capsys.readouterr().out
    tables = parse_tables(out)
    queries = sorted(str(p) for p in folder.glob("*.png"))
    assert sorted(tables) == queries and "rank  path" in out
    expected = Searcher.load("data/embeddings", gallery="validation").search(queries, k=3)
    for number, query in enumerate(queries):
        rows = tables[query]
        assert [r[0] for r in rows] == [1, 2, 3]
        assert [r[1] for r in rows] == expected.paths[number]
        assert [r[2] for r in rows] == expected.labels[number].tolist()
        np.testing.assert_allclose([r[3] for r in rows], expected.distances[number], atol=1e-4)
        assert all(r[1].startswith(("images/2/", "images/3/")) for r in rows)  # validation only


def test_search_writes_the_grid(in_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    queries = ["data/prepared/images/0/1.png", "data/prepared/images/3/3.png"]
    out_png = in_repo / "grid.png"
    assert main(["search", *queries, "-k", "4", "--exclude-self", "--out", str(out_png)]) == 0
    assert "grid written to" in capsys.readouterr().out
    result = Searcher.load("data/embeddings").search(queries, k=4, exclude_self=True)
    assert 1 not in result.ids[0].tolist() and 15 not in result.ids[1].tolist()
    with Image.open(out_png) as grid:
        size = grid.size
    blank = Image.new("RGB", (8, 8))
    from embedlab.viz import GridRow

    same_layout = [GridRow(blank, [blank] * 4, [0.0] * 4, [True] * 4)] * 2
    assert size == draw_retrieval_grid(same_layout).size


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["search", "nope.png"], "error: nope.png: no such file or folder"),
        (
            ["search", "data/prepared/images/0/0.png", "--embeddings", "elsewhere"],
            "error: elsewhere/info.json: not found (run the embed stage first)",
        ),
        (
            ["search", "data/prepared/images/0/0.png", "--out", "grid.jpg"],
            "error: --out grid.jpg: the grid is written as PNG, name it *.png",
        ),
        (
            ["search", "data/prepared/images/0/0.png", "--top-k", "0"],
            "error: embedlab search: argument -k/--top-k: must be an integer >= 1, got '0'",
        ),
        (
            ["compare", ".", ".", "--seed", "-1"],
            "error: embedlab compare: argument --seed: must be an integer >= 0, got '-1'",
        ),
        (
            ["compare", ".", ".", "--resamples", "ten"],
            "error: embedlab compare: argument --n-resamples/--resamples: must be an integer "
            ">= 100, got 'ten'",
        ),
        (["compare", ".", ".", "--top-k", "0"], "error: embedlab compare: argument --top-k"),
        (
            ["compare", ".", ".", "--max-queries", "-2"],
            "error: embedlab compare: argument --max-queries: must be an integer >= 0",
        ),
        (["search"], "error: embedlab search: the following arguments are required: PATH"),
        (
            ["export", "--models", "nowhere"],
            "error: nowhere/extractor.json: extractor config not found",
        ),
        (
            ["search", "data/prepared/images/0/0.png", "--rerank", "3", "--models", "models"],
            "error: models/reranker/reranker.json: re-ranker not found",
        ),
        (
            ["export", "--reranker", "--format", "torchscript"],
            "error: export --reranker: only --format onnx is supported",
        ),
    ],
)
def test_user_errors_are_one_line_and_exit_2(
    in_repo: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty.pth: cannot read weights (not a torch or safetensors weights file"),
        (b"label,path\n", "empty.pth: cannot read weights: garbled (Unsupported operand 108)"),
        ("objects", "empty.pth: cannot read weights: it holds Python objects, not only tensors"),
        ("no tensors", "empty.pth: holds no tensors"),
    ],
)
def test_convert_weights_of_a_file_without_weights_is_one_line(
    in_repo: Path, capsys: pytest.CaptureFixture[str], content: bytes | str, message: str
) -> None:
    import torch

    source = Path("empty.pth")
    if content == "objects":  # a pickled object: torch's refusal runs over ten lines
        torch.save({"optimizer": argparse.Namespace(lr=0.1)}, source)
    elif content == "no tensors":
        torch.save({}, source)
    else:
        source.write_bytes(content)
    assert main(["convert-weights", str(source), "out.safetensors", "--arch", "resnet10t"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1, err
    assert "weights_only" not in err and not Path("out.safetensors").exists()


@pytest.mark.parametrize("status", [[], ["--status"]])
def test_sync_refuses_without_its_params_file(
    workdir: Path, capsys: pytest.CaptureFixture[str], status: list[str]
) -> None:
    # Defaults would send pending records to a local store instead of the team's server.
    assert main(["sync", *status, "--params", "elsewhere.yaml"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "error: elsewhere.yaml: file not found: sync reads the tracker stores from it "
        "(run it in the repo root, or pass --params)\n"
    )
    assert not (workdir / "mlflow.db").exists()


def test_export_command(in_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "--format", "torchscript", "--out", "served/model.pt"]) == 0
    assert Path("served/model.pt").is_file()
    assert "exported torchscript extractor to served/model.pt" in capsys.readouterr().out


def test_parser_choices_match_the_library() -> None:
    assert cli.GALLERY_CHOICES == GALLERY_CHOICES and cli.EXPORT_FORMATS == FORMATS


@pytest.mark.slow
@pytest.mark.integration
def test_console_script_entry_point(repo: Path) -> None:
    script = Path(sys.executable).with_name("embedlab")
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "embedlab.cli"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [*command, "search", "data/prepared/images/1/0.png", "-k", "2"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert parse_tables(done.stdout)["data/prepared/images/1/0.png"][0][1] == "images/1/0.png"
    done = subprocess.run([*command, "search"], cwd=repo, capture_output=True, text=True, env=env)
    assert done.returncode == 2 and "PATH" in done.stderr
