"""Seed-aware comparisons: calibration and power on simulated runs, a group comparison's
JSON checked against numbers computed here, the one-run note, the leaderboard of
configurations and the command line's number checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from embedlab.cli import main
from tests.compare_helpers import (
    make_pair,
    make_seeds,
    query_only_rejects,
    seed_aware_p,
    simulate_groups,
)

N_RESAMPLES = 400


def _seed_aware_p(runs: list[np.ndarray], k: int, seed: int) -> float:
    return seed_aware_p(runs, k, seed, N_RESAMPLES)


def _query_only_rejects(runs: list[np.ndarray], k: int, seed: int) -> bool:
    return query_only_rejects(runs, k, seed, N_RESAMPLES)


@pytest.mark.slow
def test_seed_aware_test_holds_its_level_where_the_query_only_test_does_not(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rng = np.random.default_rng(2026)
    n_null, k = 240, 3
    seed_aware, query_only = 0, 0
    for i in range(n_null):
        runs = simulate_groups(rng, k, shift=0.0)
        seed_aware += _seed_aware_p(runs, k, seed=i) < 0.05
        query_only += _query_only_rejects(runs, k, seed=i)
    rate, query_rate = seed_aware / n_null, query_only / n_null
    with capsys.disabled():
        print(f"\nnull comparisons: seed-aware rejects {rate:.1%}, query-only {query_rate:.1%}")
    assert 0.01 <= rate <= 0.10
    assert query_rate > 0.4  # it calls seed noise a finding most of the time


# Measured on the real 5-epoch runs (README, "The losses, compared"): ArcFace beats the
# triplet loss by 0.029 in map@R (3 seeds each); the triplet loss's seeds spread by sd
# 0.012 in map@R, ArcFace's by 0.0066.
LOSS_SHIFT = 0.029
LOSS_RUN_SD = (0.012, 0.0066)


def test_power_a_loss_sized_shift_is_found_with_three_seeds() -> None:
    rng = np.random.default_rng(7)
    n, k = 60, 3
    found = sum(
        _seed_aware_p(simulate_groups(rng, k, LOSS_SHIFT, LOSS_RUN_SD), k, seed=i) < 0.05
        for i in range(n)
    )
    assert found / n >= 0.7


def _means(runs: list[Path], metric: str) -> list[float]:
    return [pd.read_csv(r / "reports/per_query.csv")[metric].mean() for r in runs]


def _own_two_level_se(a: list[Path], b: list[Path], metric: str, n: int = 3000) -> float:
    """The spread of b - a under a two-level bootstrap written out plainly, one resample
    at a time: runs within each group (rescaled by sqrt(k / (k - 1))), then the queries,
    the same queries for all runs (they are the same queries)."""
    tables = [pd.read_csv(r / "reports/per_query.csv").sort_values("row_id") for r in a + b]
    values = np.array([t[metric].to_numpy() for t in tables])  # [runs, queries]
    rng = np.random.default_rng(99)
    deltas = []
    for _ in range(n):
        rows = rng.integers(0, values.shape[1], values.shape[1])
        run_means = values[:, rows].mean(axis=1)
        groups = []
        for members in (run_means[: len(a)], run_means[len(a) :]):
            k = len(members)
            picked = members[rng.integers(0, k, k)].mean()
            groups.append(members.mean() + np.sqrt(k / (k - 1)) * (picked - members.mean()))
        deltas.append(groups[1] - groups[0])
    return float(np.std(deltas, ddof=1))


def test_group_comparison_json_matches_numbers_computed_here(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = make_seeds(tmp_path, "a", 0.55, [0, 1, 2])
    b = make_seeds(tmp_path, "b", 0.35, [0, 1, 2])
    out = tmp_path / "out"
    spec_a, spec_b = ",".join(map(str, a)), ",".join(map(str, b))
    assert main(["compare", spec_a, spec_b, "--out", str(out), "--seed", "5"]) == 0
    report = json.loads((out / "compare.json").read_text())

    assert report["training_variance"] is True and report["notes"] == []
    assert report["groups"]["a"]["members"] == ["a-s0", "a-s1", "a-s2"]
    assert report["groups"]["b"]["seeds"] == [0, 1, 2]
    assert report["n_queries"] == 40 and report["paired"] is True
    for name in ("cmc@1", "map@5"):
        m = report["metrics"][name]
        seeds_a, seeds_b = _means(a, name), _means(b, name)
        assert m["per_seed"]["a"] == pytest.approx(seeds_a, abs=1e-12)
        assert m["per_seed"]["b"] == pytest.approx(seeds_b, abs=1e-12)
        assert m["a"] == pytest.approx(np.mean(seeds_a), abs=1e-12)
        assert m["spread"]["b"] == pytest.approx(np.std(seeds_b, ddof=1), abs=1e-12)
        assert m["delta"] == pytest.approx(np.mean(seeds_b) - np.mean(seeds_a), abs=1e-12)
        # Student's t around the delta, with at least the run level's 3 + 3 - 2 degrees of
        # freedom and at most those plus the query level's 40 - 1
        assert 4 <= m["df"] <= 4 + 39
        half = scipy_stats.t.ppf(0.975, m["df"]) * m["se"]
        assert m["ci95"] == pytest.approx([m["delta"] - half, m["delta"] + half], abs=1e-12)
        p = 2 * scipy_stats.t.sf(abs(m["delta"]) / m["se"], m["df"])
        assert m["p_value"] == pytest.approx(p, abs=1e-12)
        lo, hi = m["ci95"]
        assert m["verdict"] == ("better" if lo > 0 else "worse" if hi < 0 else "within noise")
        # the standard error agrees with a two-level bootstrap written out here
        assert m["se"] == pytest.approx(_own_two_level_se(a, b, name), rel=0.1)

    # fixed: missed by every seed of A and hit by every seed of B; broken: the reverse
    hits_a = np.array([pd.read_csv(r / "reports/per_query.csv")["cmc@1"] > 0 for r in a])
    hits_b = np.array([pd.read_csv(r / "reports/per_query.csv")["cmc@1"] > 0 for r in b])
    ids = pd.read_csv(a[0] / "reports/per_query.csv")["row_id"].to_numpy()
    fixed = ids[(~hits_a).all(axis=0) & hits_b.all(axis=0)]
    broken = ids[hits_a.all(axis=0) & (~hits_b).all(axis=0)]
    assert sorted(report["queries"]["fixed"]) == sorted(fixed.tolist())
    assert sorted(report["queries"]["broken"]) == sorted(broken.tolist())
    flipping = int((hits_a.any(axis=0) & ~hits_a.all(axis=0)).sum())
    assert report["flipping"]["a"] == flipping

    printed = capsys.readouterr().out
    assert "3 seeds vs 3 seeds" in printed.splitlines()[0]
    assert report["metrics"]["map@5"]["verdict"] in printed
    page = (out / "index.html").read_text()
    assert page.count('class="seed"') == len(report["metrics"]) * 6  # every seed, both sides
    assert "leave out training variance" not in page


def test_one_run_per_side_says_the_interval_leaves_out_training_variance(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = make_pair(tmp_path)
    out = tmp_path / "out"
    assert main(["compare", str(a), str(b), "--out", str(out), "--no-trackers"]) == 0
    report = json.loads((out / "compare.json").read_text())
    assert report["training_variance"] is False
    assert any("leave out training variance" in note for note in report["notes"])
    printed = capsys.readouterr().out
    assert "note: one run per side" in printed and "leave out training variance" in printed
    assert "leave out training variance" in (out / "index.html").read_text()


def test_one_run_against_a_group_borrows_the_group_s_training_variance(tmp_path: Path) -> None:
    a = make_seeds(tmp_path, "a", 0.5, [0])
    b = make_seeds(tmp_path, "b", 0.5, [0, 1, 2])
    out = tmp_path / "out"
    assert main(["compare", str(a[0]), ",".join(map(str, b)), "--out", str(out)]) == 0
    report = json.loads((out / "compare.json").read_text())
    assert report["training_variance"] is True
    assert report["notes"] == [
        "one run on side A: its training variance is taken to be the other side's "
        "(same noise assumed)"
    ]
    assert report["metrics"]["map@5"]["df"] >= 2  # B's 3 seeds give the run level 2


def test_leaderboard_has_one_row_per_configuration_and_marks_ties_with_the_best(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    configs = {
        "tight": make_seeds(tmp_path, "tight", 0.30, [0, 1, 2], {"lr": 0.1}),
        "close": make_seeds(tmp_path, "close", 0.31, [0, 1, 2], {"lr": 0.2}),
        "loose": make_seeds(tmp_path, "loose", 0.90, [0, 1], {"lr": 0.3}),
    }
    out = tmp_path / "board"
    specs = [",".join(map(str, runs)) for runs in configs.values()]
    assert main(["compare", *specs, "--out", str(out), "--sort", "map@5"]) == 0
    board = json.loads((out / "leaderboard.json").read_text())
    rows = {row["members"][0].split("-")[0]: row for row in board["runs"]}
    assert board["params_changed"] == ["lr"]
    assert {k: row["n_seeds"] for k, row in rows.items()} == {"tight": 3, "close": 3, "loose": 2}
    for key, runs in configs.items():
        m = rows[key]["metrics"]["map@5"]
        assert m["per_seed"] == pytest.approx(_means(runs, "map@5"), abs=1e-12)
        assert m["ci95"][0] <= m["mean"] <= m["ci95"][1]
    means = [row["metrics"]["map@5"]["mean"] for row in board["runs"]]
    assert means == sorted(means, reverse=True)
    for row in board["runs"][1:]:
        versus = row["vs_best"]
        assert versus["tied_with_best"] == (versus["ci95"][1] >= 0)
    assert not rows["loose"]["vs_best"]["tied_with_best"]  # far behind: not noise
    assert board["tied_with_best"] == [
        r["name"] for r in board["runs"] if r["vs_best"]["tied_with_best"]
    ]
    page = (out / "index.html").read_text()
    assert page.count('class="seed"') == 8  # one dot per seed, next to the sort metric
    header = capsys.readouterr().out.splitlines()[0].split()
    assert header[:5] == ["#", "configuration", "lr", "seeds", "queries"]


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--seed", "-1", "--seed: must be an integer >= 0, got '-1'"),
        ("--seed", "one", "--seed: must be an integer >= 0, got 'one'"),
        ("--n-resamples", "50", "--n-resamples/--resamples: must be an integer >= 100, got '50'"),
        ("--resamples", "1e4", "--n-resamples/--resamples: must be an integer >= 100, got '1e4'"),
        ("--top-k", "0", "--top-k: must be an integer >= 1, got '0'"),
        ("--max-queries", "-3", "--max-queries: must be an integer >= 0, got '-3'"),
    ],
)
def test_bad_numbers_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str, message: str
) -> None:
    a, b = make_pair(tmp_path)
    out = tmp_path / "out"
    assert main(["compare", str(a), str(b), "--out", str(out), flag, value]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err
    assert not out.exists()


def test_a_group_with_an_empty_member_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = make_pair(tmp_path)
    assert main(["compare", f"{a},,{a}", str(b)]) == 2
    assert capsys.readouterr().err == f"error: run group '{a},,{a}': an empty name between commas\n"
