"""The manifest contract: one CSV that every stage after ``prepare`` validates on load.

Columns follow Open Metric Learning so users can bring their existing files:
``label`` (int), ``path`` (relative to ``dataset_root`` or absolute), ``split``
(``train``/``validation``), ``is_query``/``is_gallery`` (bool, validation rows),
optional ``category``, ``sequence``, ``class_name``, and an optional bbox
``x_1, y_1, x_2, y_2`` (all four or none).

Problems are reported with the CSV line number (the header is line 1) and column.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from embedlab.errors import EmbedlabError
from embedlab.io import atomic_path, read_json, write_json

REQUIRED_COLUMNS = ("label", "path", "split")
BBOX_COLUMNS = ("x_1", "y_1", "x_2", "y_2")
OPTIONAL_COLUMNS = ("is_query", "is_gallery", "category", "sequence", "class_name", *BBOX_COLUMNS)
SPLITS = ("train", "validation")
MANIFEST_NAME = "manifest.csv"
SIDECAR_NAME = "manifest.json"
MAX_LISTED = 10
"""How many offending rows or files one error line lists before it says '... and N more'."""


class ManifestError(EmbedlabError):
    """The manifest breaks the contract; the message names the file, line and column."""


@dataclass(frozen=True)
class Manifest:
    """A validated manifest and the folder its relative paths start from."""

    df: pd.DataFrame
    dataset_root: Path
    source: Path | None = None

    def absolute_paths(self) -> list[str]:
        """Paths of every row, joined with ``dataset_root`` where relative."""
        return resolve_paths(self.df["path"], self.dataset_root)

    def split(self, name: str) -> pd.DataFrame:
        """Rows of one split, with their manifest row id kept in ``row_id``."""
        return self.df[self.df["split"] == name]


def resolve_paths(paths: pd.Series, dataset_root: Path) -> list[str]:
    """Join relative paths with ``dataset_root``; absolute paths stay as they are.

    >>> resolve_paths(pd.Series(["a/1.png", "/abs/2.png"]), Path("/data"))
    ['/data/a/1.png', '/abs/2.png']
    """
    root = str(dataset_root)
    return [p if os.path.isabs(p) else os.path.join(root, p) for p in paths.astype(str)]


def _line(positions: np.ndarray | list[int]) -> str:
    """CSV line numbers (header is line 1) of dataframe positions, capped at MAX_LISTED."""
    lines = [str(int(p) + 2) for p in list(positions)[:MAX_LISTED]]
    more = len(positions) - MAX_LISTED
    return ", ".join(lines) + (f" and {more} more" if more > 0 else "")


def _parse_bool(series: pd.Series, column: str, name: str) -> pd.Series:
    mapping = {"true": True, "false": False, "1": True, "0": False, "1.0": True, "0.0": False}
    text = series.astype(str).str.strip().str.lower()
    bad = ~text.isin(list(mapping))
    if bad.any():
        pos = np.flatnonzero(bad.to_numpy())
        raise ManifestError(
            f"{name}: line {_line(pos)}, column '{column}': "
            f"expected true/false, got {series.iloc[pos[0]]!r}"
        )
    return text.map(mapping).astype(bool)


def normalise_manifest(df: pd.DataFrame, name: str = MANIFEST_NAME) -> pd.DataFrame:
    """Check column types and values; return a copy with clean dtypes.

    Raises :class:`ManifestError` naming the line and column of the first kind of problem.

    >>> df = pd.DataFrame({"label": ["1", "1"], "path": ["a.png", "b.png"],
    ...                    "split": ["validation", "validation"]})
    >>> out = normalise_manifest(df)
    >>> out["label"].tolist(), out["is_query"].tolist()
    ([1, 1], [True, True])
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ManifestError(
            f"{name}: missing required column(s) {', '.join(missing)} "
            f"(found: {', '.join(map(str, df.columns))})"
        )
    df = df.reset_index(drop=True).copy()

    labels = pd.to_numeric(df["label"], errors="coerce")
    bad = labels.isna() | (labels.fillna(0) % 1 != 0)
    if bad.any():
        pos = np.flatnonzero(bad.to_numpy())
        raise ManifestError(
            f"{name}: line {_line(pos)}, column 'label': expected an integer, "
            f"got {df['label'].iloc[pos[0]]!r}"
        )
    df["label"] = labels.astype(np.int64)

    df["path"] = df["path"].astype(str)
    empty = df["path"].str.strip().isin(["", "nan"])
    if empty.any():
        raise ManifestError(f"{name}: line {_line(np.flatnonzero(empty))}, column 'path': empty")
    dup = df["path"].duplicated(keep="first")
    if dup.any():
        pos = np.flatnonzero(dup.to_numpy())
        raise ManifestError(
            f"{name}: line {_line(pos)}, column 'path': duplicate path {df['path'].iloc[pos[0]]!r}"
        )

    df["split"] = df["split"].astype(str).str.strip()
    bad = ~df["split"].isin(SPLITS)
    if bad.any():
        pos = np.flatnonzero(bad.to_numpy())
        raise ManifestError(
            f"{name}: line {_line(pos)}, column 'split': unknown value "
            f"{df['split'].iloc[pos[0]]!r} (expected one of {', '.join(SPLITS)})"
        )

    is_val = df["split"] == "validation"
    for column in ("is_query", "is_gallery"):
        if column in df.columns:
            values = df[column].where(is_val, False)  # train rows: ignored
            df[column] = _parse_bool(values.fillna(True), column, name) & is_val
        else:  # no split info: every validation item is both query and gallery
            df[column] = is_val

    for column in ("category", "sequence", "class_name"):
        if column in df.columns:
            df[column] = df[column].fillna("").astype(str)

    present = [c for c in BBOX_COLUMNS if c in df.columns]
    if present:
        if len(present) != len(BBOX_COLUMNS):
            absent = [c for c in BBOX_COLUMNS if c not in present]
            raise ManifestError(f"{name}: bbox needs all of x_1, y_1, x_2, y_2; missing {absent}")
        boxes = df[list(BBOX_COLUMNS)].apply(pd.to_numeric, errors="coerce")
        n_set = boxes.notna().sum(axis=1)
        partial = (n_set > 0) & (n_set < 4)
        if partial.any():
            pos = np.flatnonzero(partial.to_numpy())
            row = boxes.iloc[pos[0]]
            empty_cols = [c for c in BBOX_COLUMNS if pd.isna(row[c])]
            raise ManifestError(
                f"{name}: line {_line(pos)}: partial bbox, column(s) {', '.join(empty_cols)} empty "
                "(give all four of x_1, y_1, x_2, y_2 or none)"
            )
        full = n_set == 4
        inverted = full & ((boxes["x_2"] <= boxes["x_1"]) | (boxes["y_2"] <= boxes["y_1"]))
        negative = full & (boxes[list(BBOX_COLUMNS)] < 0).any(axis=1)
        bad = inverted | negative
        if bad.any():
            pos = np.flatnonzero(bad.to_numpy())
            raise ManifestError(
                f"{name}: line {_line(pos)}, columns x_1..y_2: bbox must have "
                f"0 <= x_1 < x_2 and 0 <= y_1 < y_2, got {boxes.iloc[pos[0]].tolist()}"
            )
        for column in BBOX_COLUMNS:
            df[column] = boxes[column]
    return df


def check_splits(df: pd.DataFrame, name: str = MANIFEST_NAME, *, need_train: bool = True) -> None:
    """Check what training and validation need: enough train items, queries and galleries.

    A query whose label has no gallery item (other than itself) is a warning with a
    count; it is an error only when every query is like that.
    """
    train = df[df["split"] == "train"]
    if need_train:
        if train.empty:
            raise ManifestError(f"{name}: the train split is empty (no row with split=train)")
        counts = train["label"].value_counts()
        single = counts[counts < 2].index.sort_values()
        if len(single):
            listed = ", ".join(map(str, single[:MAX_LISTED]))
            more = f" and {len(single) - MAX_LISTED} more" if len(single) > MAX_LISTED else ""
            raise ManifestError(
                f"{name}: train label(s) {listed}{more} have a single image; "
                "metric learning needs at least 2 per label"
            )
    val = df[df["split"] == "validation"]
    if val.empty:
        raise ManifestError(f"{name}: the validation split is empty (no row with split=validation)")
    queries, gallery = val[val["is_query"]], val[val["is_gallery"]]
    if queries.empty:
        raise ManifestError(f"{name}: the validation split has no query (is_query all false)")
    if gallery.empty:
        raise ManifestError(f"{name}: the validation split has no gallery (is_gallery all false)")
    n_relevant = count_gallery_matches(queries, gallery)
    lonely = int((n_relevant == 0).sum())
    if lonely == len(queries):
        raise ManifestError(
            f"{name}: none of the {len(queries)} validation queries has a gallery item "
            "with the same label"
        )
    if lonely:
        warnings.warn(
            f"{name}: {lonely} of {len(queries)} validation queries have no gallery item with "
            "their label; they are left out of the metric averages",
            stacklevel=2,
        )


def count_gallery_matches(queries: pd.DataFrame, gallery: pd.DataFrame) -> np.ndarray:
    """Gallery items sharing each query's label, not counting the query itself.

    >>> q = pd.DataFrame({"label": [1, 2]}, index=[0, 1])
    >>> g = pd.DataFrame({"label": [1, 1, 2]}, index=[0, 5, 1])
    >>> count_gallery_matches(q, g).tolist()
    [1, 0]
    """
    per_label = gallery["label"].value_counts()
    counts = queries["label"].map(per_label).fillna(0).to_numpy(dtype=np.int64)
    return counts - queries.index.isin(gallery.index).astype(np.int64)


def check_files(paths: list[str], dataset_root: Path, name: str = MANIFEST_NAME) -> None:
    """Every path must stay inside ``dataset_root`` (when relative) and exist."""
    escaping = [
        i
        for i, p in enumerate(paths)
        if not os.path.isabs(p) and ".." in Path(p).parts
        and not os.path.normpath(os.path.join(dataset_root, p)).startswith(str(dataset_root))
    ]
    if escaping:
        raise ManifestError(
            f"{name}: line {_line(escaping)}, column 'path': {paths[escaping[0]]!r} escapes "
            f"dataset_root {dataset_root} through '..'"
        )
    absolute = resolve_paths(pd.Series(paths), dataset_root)
    missing = [i for i, p in enumerate(absolute) if not os.path.isfile(p)]
    if missing:
        shown = ", ".join(f"line {i + 2}: {paths[i]}" for i in missing[:MAX_LISTED])
        more = f" and {len(missing) - MAX_LISTED} more" if len(missing) > MAX_LISTED else ""
        raise ManifestError(
            f"{name}: {len(missing)} image file(s) missing under {dataset_root}: {shown}{more}"
        )


def load_manifest(
    path: str | Path, dataset_root: str | Path | None = None, *, need_train: bool = True,
    files: bool = True,
) -> Manifest:
    """Read and validate a manifest.

    ``dataset_root`` defaults to the one recorded in the ``manifest.json`` sidecar that
    ``prepare`` writes, else the manifest's own folder.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found (run the prepare stage first)")
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: not a readable CSV: {exc}".splitlines()[0]) from None
    if dataset_root is None:
        sidecar = path.with_name(SIDECAR_NAME)
        recorded = read_json(sidecar).get("dataset_root") if sidecar.is_file() else None
        dataset_root = Path(recorded) if recorded else path.parent
        if not dataset_root.is_absolute():
            dataset_root = path.parent / dataset_root
    root = Path(dataset_root).resolve()
    df = normalise_manifest(raw, name=str(path))
    check_splits(df, name=str(path), need_train=need_train)
    if files:
        check_files(df["path"].tolist(), root, name=str(path))
    return Manifest(df=df, dataset_root=root, source=path)


def write_manifest(df: pd.DataFrame, out_dir: str | Path, dataset_root: str | Path, **info: object) -> Path:
    """Write ``manifest.csv`` and its ``manifest.json`` sidecar atomically into ``out_dir``.

    ``dataset_root`` is stored relative to ``out_dir`` when it lies inside it, so the
    prepared folder can move (DVC caches and restores it elsewhere).
    """
    out_dir = Path(out_dir)
    root = Path(dataset_root).resolve()
    try:
        recorded = str(root.relative_to(out_dir.resolve()))
    except ValueError:
        recorded = str(root)
    target = out_dir / MANIFEST_NAME
    with atomic_path(target) as tmp:
        df.to_csv(tmp, index=False)
    write_json(out_dir / SIDECAR_NAME, {"dataset_root": recorded, "rows": len(df), **info})
    return target
