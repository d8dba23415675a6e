"""Verification thresholds from search to export: `embedlab search --threshold` marks the
neighbours at or beyond the threshold as no match (JSON, terminal, grid, Python API), an
unknown rate or another model's thresholds are one-line errors, and the exported model
carries the thresholds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from embedlab.cli import main
from embedlab.embedding.searcher import Searcher
from embedlab.embedding.store import read_store
from embedlab.io import file_sha256
from embedlab.metrics.verification import choose_thresholds_chunked
from embedlab.models.export import export_extractor, exported_thresholds
from embedlab.models.thresholds import Threshold, Thresholds, read_thresholds
from embedlab.viz import CORRECT_COLOR, NO_MATCH_COLOR, WRONG_COLOR, tile_box
from tests.unit.test_searcher import make_workspace

RATES = (0.1, 0.5)
QUERIES = ["data/prepared/images/2/1.png", "data/prepared/images/3/2.png"]
K = 16  # every item: the other validation class lies beyond the thresholds


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace whose reports/thresholds.json is chosen on its validation embeddings."""
    root = tmp_path_factory.mktemp("repo")
    store = read_store(make_workspace(root))
    validation = np.flatnonzero((store.items["split"] == "validation").to_numpy())
    x = torch.from_numpy(np.array(store.embeddings()))[validation]
    labels = torch.tensor(store.items["label"].to_numpy(np.int64))[validation]
    ids = torch.from_numpy(validation)
    choice = choose_thresholds_chunked(x, x, labels, labels, RATES, query_ids=ids, gallery_ids=ids)
    entries = tuple(Threshold(c.fmr_target, c.threshold, c.fmr, c.fnmr) for c in choice.entries)
    chosen = Thresholds(
        "euclidean", store.info.extractor_sha256, choice.n_positive, choice.n_negative, entries
    )
    (root / "reports").mkdir()
    chosen.write(root / "reports" / "thresholds.json")
    return root


@pytest.fixture
def in_repo(repo: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(repo)
    return repo


def test_json_output_marks_each_neighbour(in_repo: Path, capsys: pytest.CaptureFixture[str]):
    chosen = read_thresholds("reports/thresholds.json")
    argv = ["search", *QUERIES, "-k", str(K), "--threshold", "fmr=0.1", "--json"]
    assert main(argv) == 0
    document = json.loads(capsys.readouterr().out)
    threshold = chosen.lookup(0.1)
    assert document["threshold"] == threshold
    expected = Searcher.load("data/embeddings").search(QUERIES, k=K, threshold=threshold)
    seen = set()
    for number, query in enumerate(document["queries"]):
        assert query["query"] == QUERIES[number]
        assert [r["path"] for r in query["results"]] == expected.paths[number]
        for record in query["results"]:
            assert record["match"] == (record["distance"] < threshold)
            seen.add(record["match"])
        assert [r["match"] for r in query["results"]] == expected.matches[number].tolist()
    assert seen == {True, False}  # the case shows both decisions


def test_a_raw_distance_and_the_python_api(in_repo: Path) -> None:
    searcher = Searcher.load("data/embeddings")
    plain = searcher.search(QUERIES, k=K)
    cut = float(np.median(plain.distances))
    result = searcher.search(QUERIES, k=K, threshold=cut)
    np.testing.assert_array_equal(result.matches, plain.distances < np.float32(cut))
    assert result.threshold == cut and result.to_frame()["match"].tolist() == (
        result.matches.ravel().tolist()
    )
    assert searcher.search(QUERIES, k=K, threshold=str(cut)).matches.tolist() == (
        result.matches.tolist()
    )


def test_terminal_table_says_no_match(in_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", QUERIES[0], "-k", str(K), "--threshold", "fmr=0.1"]) == 0
    out = capsys.readouterr().out
    threshold = read_thresholds("reports/thresholds.json").lookup(0.1)
    assert f"match (distance < {threshold:.4f})" in out
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert len(rows) == K
    for row in rows:
        distance = float(row[3])
        decision = " ".join(row[4:])
        # the printed distance is rounded: only rows clearly on one side are checked
        if abs(distance - threshold) > 1e-4:
            assert decision == ("yes" if distance < threshold else "no match"), row


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--threshold", "fmr=0.01"],
            "error: no threshold chosen at fmr=0.01; available: fmr=0.1, fmr=0.5\n",
        ),
        (
            ["--threshold", "fmr=0.1", "--thresholds", "missing.json"],
            "error: missing.json: not found (run the validate stage)\n",
        ),
        (
            ["--threshold", "far=0.1"],
            "error: --threshold: expected a distance (0.83) or fmr=RATE (fmr=0.001), got "
            "'far=0.1'\n",
        ),
    ],
)
def test_threshold_errors_are_one_line_exit_2(
    in_repo: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main(["search", QUERIES[0], *argv]) == 2
    captured = capsys.readouterr()
    assert captured.err == message and captured.out == ""


def test_thresholds_of_other_weights_are_refused(
    in_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stale = read_thresholds("reports/thresholds.json")
    data = stale.to_json() | {"extractor_sha256": "0" * 64}
    (tmp_path / "old.json").write_text(json.dumps(data))
    argv = [
        "search",
        QUERIES[0],
        "--threshold",
        "fmr=0.1",
        "--thresholds",
        str(tmp_path / "old.json"),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "chosen for other weights" in err and err.count("\n") == 1
    # a raw distance needs no thresholds file at all
    assert main([*argv[:3], "0.5", "--thresholds", str(tmp_path / "old.json")]) == 0


def test_grid_draws_no_match_items_grey(in_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_png = in_repo / "threshold_grid.png"
    argv = ["search", QUERIES[0], "-k", str(K), "--threshold", "fmr=0.1", "--out", str(out_png)]
    assert main(argv) == 0
    capsys.readouterr()
    result = Searcher.load("data/embeddings").search(QUERIES[:1], k=K, threshold="fmr=0.1")
    assert not result.matches[0].all() and result.matches[0].any()
    with Image.open(out_png) as grid:
        for rank, match in enumerate(result.matches[0].tolist()):
            corner = grid.getpixel(tile_box(0, rank + 1, K)[:2])
            # the query is a dataset image: matched items keep their green/red frame
            assert corner == NO_MATCH_COLOR if not match else corner in (CORRECT_COLOR, WRONG_COLOR)


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_carries_the_thresholds(in_repo: Path, fmt: str) -> None:
    path = export_extractor("models", fmt, f"served/extractor.{fmt}")
    carried = exported_thresholds(path)
    assert carried == read_thresholds("reports/thresholds.json")
    assert carried.extractor_sha256 == file_sha256("models/extractor.safetensors")
    assert [(e.fmr_target, e.threshold) for e in carried.entries] == [
        (r, carried.lookup(r)) for r in RATES
    ]
    bare = export_extractor("models", fmt, f"served/bare.{fmt}", with_thresholds=False)
    assert exported_thresholds(bare) is None


def test_export_refuses_thresholds_of_other_weights(
    in_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = read_thresholds("reports/thresholds.json").to_json() | {"extractor_sha256": "f" * 64}
    (tmp_path / "old.json").write_text(json.dumps(data))
    argv = ["export", "--format", "torchscript", "--out", "served/x.pt"]
    assert main([*argv, "--thresholds", str(tmp_path / "old.json")]) == 2
    err = capsys.readouterr().err
    assert "chosen for other weights" in err and "--no-thresholds" in err
    assert main([*argv, "--no-thresholds"]) == 0
    assert "(no thresholds)" in capsys.readouterr().out
