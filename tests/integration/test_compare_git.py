"""Run resolution through real git revisions and DVC experiments (a tiny repo in tmp)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from embedlab.cli import main
from tests.compare_helpers import blobs, make_run

GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.com",
    "DVC_NO_ANALYTICS": "1",
}

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _run(repo: Path, *command: str) -> str:
    out = subprocess.run(
        command,
        cwd=repo,
        env={**os.environ, **GIT_ENV},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, f"{command}: {out.stderr[-2000:]}"
    return out.stdout.strip()


LABELS = [i % 4 for i in range(32)]


def _commit_run(repo: Path, spread: float, seed: int, lr: float, message: str) -> str:
    make_run(repo, blobs(LABELS, spread, seed), LABELS, {"train": {"optimizer": {"lr": lr}}})
    _run(repo, "git", "add", "-A")
    _run(repo, "git", "commit", "-qm", message)
    return _run(repo, "git", "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A git repo: a first commit without reports, then two runs committed one after the other."""
    root = tmp_path / "repo"
    root.mkdir()
    _run(root, "git", "init", "-q", "-b", "main")
    (root / "README").write_text("tiny\n")
    _run(root, "git", "add", "-A")
    _run(root, "git", "commit", "-qm", "start")
    _commit_run(root, 0.5, 1, 0.001, "run a")
    _commit_run(root, 0.3, 2, 0.003, "run b")
    monkeypatch.chdir(root)
    return root


def test_compare_two_git_revisions(repo: Path, tmp_path: Path) -> None:
    sha_a = _run(repo, "git", "rev-parse", "HEAD~1")
    assert main(["compare", "HEAD~1", "main", "--no-trackers"]) == 0
    out = repo / "reports/compare/HEAD_1_vs_main"
    report = json.loads((out / "compare.json").read_text())
    assert (report["a"], report["b"]) == ("HEAD~1", "main")
    assert report["runs"]["a"] == {
        "spec": "HEAD~1",
        "name": "HEAD~1",
        "kind": "revision",
        "rev": sha_a,
    }
    assert report["params_changed"] == {"train.optimizer.lr": {"a": 0.001, "b": 0.003}}

    # the same numbers as from folders holding the two commits' files
    for rev, folder in (("HEAD~1", tmp_path / "a"), ("HEAD", tmp_path / "b")):
        (folder / "reports").mkdir(parents=True)
        for name in ("reports/per_query.csv", "reports/topk.csv", "params.yaml"):
            (folder / name).write_bytes(
                subprocess.run(
                    ["git", "show", f"{rev}:{name}"], cwd=repo, capture_output=True, check=True
                ).stdout
            )
    assert (
        main(
            [
                "compare",
                str(tmp_path / "a"),
                str(tmp_path / "b"),
                "--out",
                str(tmp_path / "f"),
                "--no-trackers",
            ]
        )
        == 0
    )
    from_folders = json.loads((tmp_path / "f/compare.json").read_text())
    assert from_folders["metrics"] == report["metrics"]
    assert from_folders["queries"] == report["queries"]

    # pictures come from the repository's data/prepared (what git revisions do not carry)
    page = (out / "index.html").read_text()
    assert page.count('src="data:image/png;base64,') > 0


def test_revision_without_reports_is_one_line(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["compare", "HEAD~2", "HEAD"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "error: run 'HEAD~2': HEAD~2:reports/per_query.csv not found "
        "(run the validate stage for it)"
    )


def test_workspace_folder_against_a_revision(repo: Path) -> None:
    assert main(["compare", "HEAD~1", ".", "--no-trackers", "--out", "o"]) == 0
    report = json.loads((repo / "o/compare.json").read_text())
    assert report["b"] == "workspace" and report["runs"]["b"]["kind"] == "folder"


@pytest.mark.slow
def test_dvc_experiment_names_and_all(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dvc = [sys.executable, "-m", "dvc"]
    _run(repo, *dvc, "init", "-q")
    _run(repo, "git", "add", "-A")
    _run(repo, "git", "commit", "-qm", "dvc init")
    make_run(repo, blobs(LABELS, 0.2, 3), LABELS, {"train": {"optimizer": {"lr": 0.01}}})
    _run(repo, *dvc, "exp", "save", "-n", "lr-1e-2")
    _run(repo, "git", "checkout", "--", ".")  # back to the baseline's files

    assert main(["compare", "main", "lr-1e-2", "--no-trackers"]) == 0
    report = json.loads((repo / "reports/compare/main_vs_lr-1e-2/compare.json").read_text())
    assert report["runs"]["b"]["kind"] == "experiment"
    assert report["params_changed"] == {"train.optimizer.lr": {"a": 0.003, "b": 0.01}}

    assert main(["compare", "--all", "--no-trackers", "--out", "board"]) == 0
    board = json.loads((repo / "board/leaderboard.json").read_text())
    assert sorted(r["name"] for r in board["runs"]) == ["lr-1e-2", "main"]
    assert board["params_changed"] == ["train.optimizer.lr"]
    assert (
        board["runs"][0]["metrics"]["cmc@1"]["mean"] >= board["runs"][1]["metrics"]["cmc@1"]["mean"]
    )


def test_revision_b_tracker_runs_get_the_comparison(repo: Path) -> None:
    # B (HEAD) recorded a csv tracker run; the workspace has since moved on to another run
    params = {"train": {"optimizer": {"lr": 0.003}}, "tracking": {"loggers": ["csv"]}}
    (repo / "params.yaml").write_text(json.dumps(params))
    (repo / "reports/run.json").write_text(json.dumps({"run_ids": {"csv": "exp-b"}}))
    _run(repo, "git", "add", "-A")
    _run(repo, "git", "commit", "-qm", "b with a tracker run")
    (repo / "reports/run.json").write_text(json.dumps({"run_ids": {"csv": "later"}}))

    assert main(["compare", "HEAD~2", "HEAD", "--out", "o"]) == 0
    report = json.loads((repo / "o/compare.json").read_text())
    summary = json.loads((repo / "logs/csv/exp-b/summary.json").read_text())
    assert summary["compare/cmc@1/delta"] == pytest.approx(report["metrics"]["cmc@1"]["delta"])
    assert not (repo / "logs/csv/later").exists()


@pytest.mark.slow
def test_all_groups_experiments_that_differ_only_in_seed(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dvc = [sys.executable, "-m", "dvc"]
    _run(repo, *dvc, "init", "-q")
    _run(repo, "git", "add", "-A")
    _run(repo, "git", "commit", "-qm", "dvc init")
    # the baseline (lr 0.003, no seed key) and two more seeds of it; two seeds of lr 0.01
    for seed, lr in [(1, 0.003), (2, 0.003), (0, 0.01), (1, 0.01)]:
        params = {"seed": seed, "train": {"optimizer": {"lr": lr}}}
        make_run(repo, blobs(LABELS, 0.3, 20 + seed + int(lr * 1000)), LABELS, params)
        _run(repo, *dvc, "exp", "save", "-n", f"lr{lr}-s{seed}")
        _run(repo, "git", "checkout", "--", ".")

    assert main(["compare", "--all", "--no-trackers", "--out", "board"]) == 0
    board = json.loads((repo / "board/leaderboard.json").read_text())
    members = sorted(sorted(row["members"]) for row in board["runs"])
    assert members == [["lr0.003-s1", "lr0.003-s2", "main"], ["lr0.01-s0", "lr0.01-s1"]]
    assert board["params_changed"] == ["train.optimizer.lr"]  # seed is not a column
    assert sorted(row["n_seeds"] for row in board["runs"]) == [2, 3]
    assert board["training_variance"] is True
    assert "seeds" in capsys.readouterr().out.splitlines()[0]
