"""How long does validating a large manifest take, files included?

Builds a manifest of ``--rows`` rows (default 200,000) over real tiny image files
(half PNG, half JPEG, with bboxes) in a temporary folder, then times, in the same run:

- ``floor``: a bare ``os.path.isfile`` loop over the same absolute paths;
- ``exists``: :func:`load_manifest` with ``image_check="exists"`` (CSV read, columns,
  splits, existence);
- ``header``: :func:`load_manifest` with the default ``image_check="header"`` (each
  image's header parsed for its size, end marker checked, bboxes checked against sizes);
- the two ways to read one image's size, as plain loops over the same files: our header
  parser (:func:`embedlab.data.image_checks.image_size`, which also checks the end
  marker) and PIL's lazy ``Image.open(path).size`` (header only, no truncation check).

Target: the default validation of 200,000 rows takes at most 10 s.

    .venv/bin/python tests/benchmarks/bench_manifest.py [--rows 200000]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd
from PIL import Image

from embedlab.data.image_checks import image_size
from embedlab.data.manifest import load_manifest, resolve_paths


def build(root: Path, rows: int) -> Path:
    """Write ``rows`` tiny images (2 per label) under ``root`` and a manifest next to them."""
    blobs = {}
    for fmt in ("PNG", "JPEG"):
        buffer = io.BytesIO()
        Image.new("RGB", (16, 12), (200, 30, 30)).save(buffer, fmt)
        blobs[fmt] = buffer.getvalue()
    paths, labels, splits = [], [], []
    per_folder = 1000
    for i in range(rows):
        folder = root / "images" / f"{i // per_folder:04d}"
        if i % per_folder == 0:
            folder.mkdir(parents=True, exist_ok=True)
        fmt, ext = ("PNG", "png") if i % 2 == 0 else ("JPEG", "jpg")
        rel = f"images/{i // per_folder:04d}/{i:07d}.{ext}"
        with open(root / rel, "wb") as handle:
            handle.write(blobs[fmt])
        paths.append(rel)
        labels.append(i // 2)
        splits.append("train" if i < rows // 2 else "validation")
    df = pd.DataFrame({"label": labels, "path": paths, "split": splits})
    df["x_1"], df["y_1"], df["x_2"], df["y_2"] = 1.0, 1.0, 15.0, 11.0
    manifest = root / "manifest.csv"
    df.to_csv(manifest, index=False)
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=2, help="best of N timings")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench-manifest-"))
    try:
        started = time.perf_counter()
        manifest = build(root, args.rows)
        print(
            f"built {args.rows} rows + files in {time.perf_counter() - started:.1f} s under {root}"
        )
        absolute = resolve_paths(pd.read_csv(manifest, usecols=["path"])["path"], root)

        def floor() -> None:
            isfile = os.path.isfile
            assert all(isfile(p) for p in absolute)

        def parser_loop() -> None:
            for p in absolute:
                image_size(p)

        def pil_lazy_loop() -> None:
            for p in absolute:
                with Image.open(p) as image:
                    _ = image.size

        timings = {}
        for name, run in (
            ("image_size loop (our header parser)", parser_loop),
            ("Image.open(p).size loop (PIL lazy)", pil_lazy_loop),
            ("floor (bare os.path.isfile loop)", floor),
            (
                "load_manifest(image_check='exists')",
                lambda: load_manifest(manifest, image_check="exists"),
            ),
            ("load_manifest(image_check='header')", lambda: load_manifest(manifest)),
        ):
            best = float("inf")
            for _ in range(args.repeats):
                started = time.perf_counter()
                run()
                best = min(best, time.perf_counter() - started)
            timings[name] = best
        base = timings["floor (bare os.path.isfile loop)"]
        print(f"rows: {args.rows}, cpus: {os.cpu_count()}, best of {args.repeats}")
        for name, seconds in timings.items():
            print(f"{name:40s} {seconds:7.2f} s  ({seconds / base:5.1f}x floor)")
        verdict = "OK" if timings["load_manifest(image_check='header')"] <= 10.0 else "OVER"
        print(f"target: default validation <= 10 s for 200,000 rows: {verdict}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
