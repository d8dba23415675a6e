"""The compare page in a real headless Chromium: what it draws, and that it runs nothing.

Skipped only when no Chromium is installed (`.ci/run` installs Debian's `chromium`).
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from embedlab.cli import main
from embedlab.compare.page import SEED_COLOR
from embedlab.viz.grids import CORRECT_COLOR, QUERY_COLOR, WRONG_COLOR
from tests.compare_helpers import CHROMIUM, blobs, chromium, make_pair, make_run, make_seeds

pytestmark = [
    pytest.mark.slow,
    pytest.mark.integration,
    pytest.mark.skipif(
        CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)"
    ),
]


def _colour_count(image: Image.Image, colour: tuple[int, int, int]) -> int:
    pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    return int(np.all(np.abs(pixels.astype(int) - colour) <= 2, axis=1).sum())


def _dump_dom(page: Path, tmp_path: Path) -> str:
    result = chromium(["--dump-dom", page.as_uri()], tmp_path / "profile-dom")
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_screenshot_shows_the_table_and_both_runs_framed_rows(tmp_path: Path) -> None:
    a, b = make_pair(tmp_path)
    out = tmp_path / "out"
    assert main(["compare", str(a), str(b), "--out", str(out), "--no-trackers"]) == 0
    shot = tmp_path / "page.png"
    result = chromium(
        [f"--screenshot={shot}", "--window-size=1200,2000", (out / "index.html").as_uri()],
        tmp_path / "profile-shot",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    image = Image.open(shot)
    assert image.size == (1200, 2000)
    grey = np.asarray(image.convert("L"))
    assert grey.std() > 20  # not a blank page
    # frames as in the grids: blue queries, green relevant and red wrong items
    for colour in (QUERY_COLOR, CORRECT_COLOR, WRONG_COLOR):
        assert _colour_count(image, colour) > 500, colour
    # the label colours of the embedded thumbnails (tests/compare_helpers.LABEL_COLOURS)
    assert _colour_count(image, (250, 200, 0)) > 2000

    dom = _dump_dom(out / "index.html", tmp_path)
    report = json.loads((out / "compare.json").read_text())
    sections = re.findall(r'<section class="pair" data-row-id="(\d+)"', dom)
    assert [int(s) for s in sections] == report["queries"]["broken"] + report["queries"]["fixed"]
    assert dom.count('<div class="run-row" data-run="a">') == len(sections)
    assert dom.count('<div class="run-row" data-run="b">') == len(sections)
    metric_rows = re.findall(r'<tr data-metric="([^"]+)">', dom)
    assert metric_rows == list(report["metrics"])
    assert "train.optimizer.lr" in dom and "0.003" in dom


def test_markup_in_file_names_and_labels_is_shown_as_text(tmp_path: Path) -> None:
    payload = "<img src=x onerror=alert(1)>.png"
    label = "<img src=x onerror=document.title='pwned'>"
    labels = [i % 2 for i in range(8)]
    names = [payload if i == 0 else f"{i:03d}.png" for i in range(8)]
    shown = [label] * 8
    a = make_run(tmp_path / "a", blobs(labels, 0.9, 1), labels, names=names, shown_labels=shown)
    b = make_run(tmp_path / "b", blobs(labels, 0.1, 2), labels, names=names, shown_labels=shown)
    out = tmp_path / "out"
    assert main(["compare", str(a), str(b), "--out", str(out), "--no-trackers"]) == 0
    report = json.loads((out / "compare.json").read_text())
    assert report["queries"]["fixed"] or report["queries"]["broken"]
    page = (out / "index.html").read_text()
    assert payload not in page and label not in page  # escaped in the file itself

    dom = _dump_dom(out / "index.html", tmp_path)
    title = re.search(r"<title>(.*?)</title>", dom).group(1)
    assert html.unescape(title) == "embedlab compare: a vs b"  # no handler renamed it
    # the browser parsed both as text, not as elements
    assert html.escape("images/" + payload, quote=False) in dom
    assert html.escape(label, quote=False) in dom
    images = _image_sources(dom)
    assert images and all(src.startswith("data:image/") for src in images), set(images)
    n_tiles = sum(len(report["queries"][k]) for k in ("fixed", "broken")) * 2 * 6
    assert len(images) == n_tiles  # no element but the tiles' pictures


def test_group_comparison_draws_each_seed_as_a_dot_beside_the_interval(tmp_path: Path) -> None:
    a = make_seeds(tmp_path, "a", 0.55, [0, 1, 2])
    b = make_seeds(tmp_path, "b", 0.35, [0, 1, 2])
    out = tmp_path / "out"
    spec_a, spec_b = ",".join(map(str, a)), ",".join(map(str, b))
    assert main(["compare", spec_a, spec_b, "--out", str(out), "--no-trackers"]) == 0
    report = json.loads((out / "compare.json").read_text())
    dom = _dump_dom(out / "index.html", tmp_path)
    # per metric row: both sides' intervals, and a dot per seed at its value
    for name, m in report["metrics"].items():
        row = re.search(rf'<tr data-metric="{re.escape(name)}">(.*?)</tr>', dom, re.S).group(1)
        assert row.count('class="interval"') == 2
        dots = [float(v) for v in re.findall(r'<circle class="seed" data-value="([^"]+)"', row)]
        assert dots == pytest.approx(m["per_seed"]["a"] + m["per_seed"]["b"], abs=1e-12)
    shot = tmp_path / "groups.png"
    result = chromium(
        [f"--screenshot={shot}", "--window-size=1400,900", (out / "index.html").as_uri()],
        tmp_path / "profile-groups",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    # the dots are drawn: 4 metrics x 6 seeds, each a disc of radius 3 (some may overlap)
    assert _colour_count(Image.open(shot), SEED_COLOR) > 4 * 6 * 10


def _image_sources(dom: str) -> list[str]:
    """``src`` of every ``<img>`` element of the serialised DOM."""
    from html.parser import HTMLParser

    sources: list[str] = []

    class Images(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            if tag == "img":
                sources.append(dict(attrs).get("src") or "")

    Images().feed(dom)
    return sources
