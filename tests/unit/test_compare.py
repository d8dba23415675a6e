"""`embedlab compare`: numbers checked against the two per_query.csv files, the leaderboard,
the top-k sources, run errors and the tracker hand-off."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from embedlab.cli import main
from embedlab.compare.pair import _seeds
from embedlab.compare.runs import load_run, resolve_run
from embedlab.compare.stats import bootstrap_ci, sign_flip_p_values
from embedlab.compare.topk import load_topk, parse_topk, topk_from_embeddings
from tests.compare_helpers import blobs, make_pair, make_run


def _compare(a: Path, b: Path, out: Path, *extra: str) -> dict:
    assert main(["compare", str(a), str(b), "--out", str(out), "--no-trackers", *extra]) == 0
    return json.loads((out / "compare.json").read_text())


def test_compare_json_matches_the_per_query_files(tmp_path: Path) -> None:
    a, b = make_pair(tmp_path)
    report = _compare(a, b, tmp_path / "out", "--seed", "7")
    pa = pd.read_csv(a / "reports/per_query.csv").set_index("row_id")
    pb = pd.read_csv(b / "reports/per_query.csv").set_index("row_id").loc[pa.index]

    assert report["a"] == "run-a" and report["b"] == "run-b"
    assert report["n_queries"] == len(pa) == 40
    assert report["seed"] == 7
    assert list(report["metrics"]) == ["cmc@1", "cmc@5", "precision@5", "map@5"]
    for name, m in report["metrics"].items():
        assert m["a"] == pytest.approx(pa[name].mean(), abs=1e-12)
        assert m["b"] == pytest.approx(pb[name].mean(), abs=1e-12)
        assert m["delta"] == pytest.approx(pb[name].mean() - pa[name].mean(), abs=1e-12)
        lo, hi = m["ci95"]
        assert lo <= m["delta"] <= hi
        assert 0.0 < m["p_value"] <= 1.0

    # fixed: cmc@1 0 -> 1; broken: 1 -> 0; broken ordered by the drop in map@5, worst first
    fixed = pa.index[(pa["cmc@1"] == 0) & (pb["cmc@1"] == 1)]
    broken = pa.index[(pa["cmc@1"] == 1) & (pb["cmc@1"] == 0)]
    assert sorted(report["queries"]["fixed"]) == sorted(fixed.tolist())
    assert sorted(report["queries"]["broken"]) == sorted(broken.tolist())
    assert fixed.size and broken.size  # the pair is built to have both
    drops = [pa.loc[r, "map@5"] - pb.loc[r, "map@5"] for r in report["queries"]["broken"]]
    assert drops == sorted(drops, reverse=True)
    gains = [pb.loc[r, "map@5"] - pa.loc[r, "map@5"] for r in report["queries"]["fixed"]]
    assert gains == sorted(gains, reverse=True)

    # changed params: exactly the learning rate
    assert report["params_changed"] == {"train.optimizer.lr": {"a": 0.001, "b": 0.003}}


def test_bootstrap_interval_is_reproducible_and_agrees_with_a_plain_bootstrap(
    tmp_path: Path,
) -> None:
    a, b = make_pair(tmp_path)
    first = _compare(a, b, tmp_path / "one", "--seed", "3")
    again = _compare(a, b, tmp_path / "two", "--seed", "3")
    other = _compare(a, b, tmp_path / "three", "--seed", "4")
    assert first["metrics"] == again["metrics"]
    assert any(first["metrics"][m]["ci95"] != other["metrics"][m]["ci95"] for m in first["metrics"])

    # the same interval, up to Monte Carlo noise, from a bootstrap written out plainly
    pa = pd.read_csv(a / "reports/per_query.csv").set_index("row_id")
    pb = pd.read_csv(b / "reports/per_query.csv").set_index("row_id").loc[pa.index]
    d = (pb["map@5"] - pa["map@5"]).to_numpy()
    rng = np.random.default_rng(12345)
    means = [d[rng.integers(0, len(d), len(d))].mean() for _ in range(10_000)]
    lo, hi = np.quantile(means, [0.025, 0.975])
    assert first["metrics"]["map@5"]["ci95"] == pytest.approx([lo, hi], abs=0.01)

    # and the numbers are the library's, with the seed the page states
    seed_bootstrap, _ = _seeds(3)
    ours = bootstrap_ci(d, 10_000, seed_bootstrap)[0]
    assert first["metrics"]["map@5"]["ci95"] == pytest.approx(ours.tolist(), abs=1e-12)
    page = (tmp_path / "one" / "index.html").read_text()
    assert '<span id="seed">3</span>' in page
    assert "sign-flip permutation test" in page


def test_bootstrap_of_constant_differences_is_a_point() -> None:
    assert bootstrap_ci(np.full(25, 0.2), n_resamples=500).tolist() == [[pytest.approx(0.2)] * 2]


def test_sign_flip_test_exact_and_monte_carlo_agree_with_the_binomial() -> None:
    # 4 differences +1, 1 of -1, 3 zeros: |sum| = 3; exact over the 32 sign patterns of the
    # 5 non-zero ones: |sum| >= 3 when 0 or 1 (or 4 or 5) of them are negative: 12 / 32
    d = np.array([1, 1, 1, 1, -1, 0, 0, 0], dtype=float)
    assert sign_flip_p_values(d).tolist() == [12 / 32]
    # 20 non-zero +-1 (14 positive): Monte Carlo; exact value P(|2X - 20| >= 8), X ~ Bin(20, 1/2)
    from math import comb

    d = np.array([1.0] * 14 + [-1.0] * 6 + [0.0] * 30)
    exact = sum(comb(20, x) for x in range(21) if abs(2 * x - 20) >= 8) / 2**20
    (p,) = sign_flip_p_values(d, n_resamples=20_000, seed=1)
    assert p == pytest.approx(exact, abs=0.01)


def test_runs_with_different_queries_are_refused_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = make_pair(tmp_path)
    table = pd.read_csv(b / "reports/per_query.csv")
    table.iloc[1:].to_csv(b / "reports/per_query.csv", index=False)  # B lacks row 0
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert err.startswith("error: runs 'run-a' and 'run-b' scored different queries")
    assert "1 row id(s) only in 'run-a' (0)" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("path,cmc@1\na.png,1\n", "column 'row_id' is missing"),
        ("row_id,cmc@1\n0,1\n0,0\n", "row 3: row_id 0 repeats"),
        ("row_id,cmc@1\n0,yes\n", "row 2, column 'cmc@1': 'yes' is not a number"),
    ],
)
def test_bad_per_query_file_names_file_row_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    a, b = make_pair(tmp_path)
    (b / "reports/per_query.csv").write_text(content)
    assert main(["compare", str(a), str(b)]) == 2
    err = capsys.readouterr().err
    assert f"{b}/reports/per_query.csv" in err and message in err


def test_unknown_run_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, _ = make_pair(tmp_path)
    assert main(["compare", str(a), "no-such-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: run 'no-such-run': not a folder with reports/")


def test_default_out_dir_is_under_reports_compare(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_pair(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["compare", "run-a", "run-b", "--no-trackers"]) == 0
    assert (tmp_path / "reports/compare/run-a_vs_run-b/compare.json").is_file()
    assert (tmp_path / "reports/compare/run-a_vs_run-b/index.html").is_file()


def test_terminal_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = make_pair(tmp_path)
    report = _compare(a, b, tmp_path / "out")
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "run-a -> run-b: 40 queries, seed 0"
    m = report["metrics"]["map@5"]
    row = next(line for line in out if line.startswith("map@5"))
    assert f"{m['a']:.4f}" in row and f"{m['delta']:+.4f}" in row
    q = report["queries"]
    assert f"fixed {len(q['fixed'])}, broken {len(q['broken'])} (by cmc@1)" in out


def test_page_draws_both_runs_topk_for_every_fixed_and_broken_query(tmp_path: Path) -> None:
    a, b = make_pair(tmp_path)
    report = _compare(a, b, tmp_path / "out")
    page = (tmp_path / "out/index.html").read_text()
    n_pairs = len(report["queries"]["fixed"]) + len(report["queries"]["broken"])
    assert page.count('<section class="pair"') == n_pairs
    # query + 5 retrieved, for A and for B, each an embedded image
    assert page.count('<figure class="tile') == n_pairs * 2 * 6
    assert page.count('src="data:image/png;base64,') == n_pairs * 2 * 6
    assert "http://" not in page and "https://" not in page and "<script" not in page
    # A's row above B's, and the broken section before the fixed one
    assert page.index('data-run="a"') < page.index('data-run="b"')
    assert page.index('id="broken"') < page.index('id="fixed"')


def test_topk_recomputed_from_embeddings_equals_the_validate_table(tmp_path: Path) -> None:
    labels = [i % 3 for i in range(18)]
    x = blobs(labels, 0.4, seed=5).astype(np.float32)
    run = make_run(tmp_path / "run", x, labels)
    written = parse_topk((run / "reports/topk.csv").read_bytes(), "topk.csv")
    items = pd.DataFrame(
        {
            "row_id": range(18),
            "path": [f"images/{i:03d}.png" for i in range(18)],
            "label": labels,
            "split": "validation",
            "is_query": True,
            "is_gallery": True,
        }
    )
    recomputed = topk_from_embeddings(x, items, top_k=5)
    pd.testing.assert_frame_equal(recomputed, written[recomputed.columns], check_dtype=False)

    # a run without topk.csv gets it from data/embeddings/
    (run / "reports/topk.csv").unlink()
    (run / "data/embeddings").mkdir()
    np.save(run / "data/embeddings/embeddings.npy", x)
    items.to_parquet(run / "data/embeddings/items.parquet")
    loaded = load_topk(load_run(resolve_run(str(run))), top_k=5)
    pd.testing.assert_frame_equal(loaded, recomputed)


def test_run_nested_in_a_repository_shows_the_repositorys_pictures(tmp_path: Path) -> None:
    """`embedlab compare . reports/reranked`: the nested folder has no data/prepared or
    params.yaml of its own; its queries and params are the repository's."""
    a, b = make_pair(tmp_path)
    nested = a / "reports" / "reranked"
    (nested / "reports").mkdir(parents=True)
    for name in ("per_query.csv", "topk.csv"):
        (nested / "reports" / name).write_bytes((b / "reports" / name).read_bytes())
    (a / "dvc.yaml").write_text("stages: {}\n")
    report = _compare(a, nested, tmp_path / "out")
    page = (tmp_path / "out/index.html").read_text()
    n_pairs = len(report["queries"]["fixed"]) + len(report["queries"]["broken"])
    assert n_pairs > 0
    assert page.count('src="data:image/png;base64,') == n_pairs * 2 * 6
    # made by the repository's params: none differs (not every key against None)
    assert report["params_changed"] == {}


def test_run_without_topk_gets_frames_with_the_query_only(tmp_path: Path) -> None:
    a, b = make_pair(tmp_path)
    (b / "reports/topk.csv").unlink()
    report = _compare(a, b, tmp_path / "out")
    page = (tmp_path / "out/index.html").read_text()
    n_pairs = len(report["queries"]["fixed"]) + len(report["queries"]["broken"])
    assert page.count("no top-k lists for this run") == n_pairs
    assert page.count('<figure class="tile') == n_pairs * (6 + 1)


def test_leaderboard_of_three_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    labels = [i % 4 for i in range(40)]
    runs = [
        make_run(tmp_path / name, blobs(labels, spread, seed), labels, {"train": {"lr": lr}})
        for name, spread, seed, lr in [
            ("r1", 0.6, 1, 0.1),
            ("r2", 0.2, 2, 0.2),
            ("r3", 0.4, 3, 0.3),
        ]
    ]
    out = tmp_path / "board"
    args = ["compare", *map(str, runs), "--out", str(out), "--sort", "map@5"]
    assert main(args) == 0
    board = json.loads((out / "leaderboard.json").read_text())
    means = {r: pd.read_csv(r / "reports/per_query.csv")["map@5"].mean() for r in runs}
    expected = [r.name for r in sorted(runs, key=lambda r: -means[r])]
    assert [row["name"] for row in board["runs"]] == expected
    assert board["params_changed"] == ["train.lr"]
    for row in board["runs"]:
        m = row["metrics"]["map@5"]
        assert m["mean"] == pytest.approx(means[tmp_path / row["name"]], abs=1e-12)
        assert m["ci95"][0] <= m["mean"] <= m["ci95"][1]
    page = (out / "index.html").read_text()
    assert page.count("<tr data-run=") == 3
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].split()[:3] == ["#", "configuration", "train.lr"]

    assert main([*args[:-1], "nope@1"]) == 2
    assert "--sort 'nope@1' is not a metric" in capsys.readouterr().err


def test_compare_logs_deltas_to_run_b_trackers(tmp_path: Path) -> None:
    a, b = make_pair(tmp_path)
    params = yaml.safe_load((b / "params.yaml").read_text())
    params["tracking"] = {"loggers": ["csv"]}
    (b / "params.yaml").write_text(yaml.safe_dump(params))
    (b / "reports/run.json").write_text(json.dumps({"run_ids": {"csv": "exp-b"}}))
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out/compare.json").read_text())
    logged = json.loads((b / "logs/csv/exp-b/summary.json").read_text())  # facts of run B
    assert logged["compare/map@5/delta"] == pytest.approx(report["metrics"]["map@5"]["delta"])
    assert logged["compare/n_broken"] == len(report["queries"]["broken"])
    assert not (a / "logs").exists()  # only B's runs, and no new run anywhere


def test_tracker_problems_never_stop_a_comparison(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = make_pair(tmp_path)
    (b / "params.yaml").write_text("train: {max_epoch: 3}\n")  # a typo: params do not parse
    (b / "reports/run.json").write_text(json.dumps({"run_ids": {"csv": "exp-b"}}))
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out/index.html").is_file()


def test_empty_per_query_file_is_an_error_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = make_pair(tmp_path)
    (b / "reports/per_query.csv").write_text("row_id,path,cmc@1\n")
    assert main(["compare", str(a), str(b)]) == 2
    assert "reports/per_query.csv: no queries" in capsys.readouterr().err
