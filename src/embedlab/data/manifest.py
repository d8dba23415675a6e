"""The manifest contract: one CSV that every stage after ``prepare`` validates on load.

Columns follow Open Metric Learning so users can bring their existing files:
``label`` (int), ``path`` (relative to ``dataset_root`` or absolute), ``split``
(``train``/``validation``), ``is_query``/``is_gallery`` (bool, validation rows),
optional ``category``, ``sequence``, ``class_name``, and an optional bbox
``x_1, y_1, x_2, y_2`` (all four or none).

Problems are reported with the CSV line number (the header is line 1) and column.
Image files are checked by :mod:`embedlab.data.image_checks`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from embedlab.data.image_checks import (
    IMAGE_CHECKS,
    PIXEL_LIMIT_PARAM,
    ImageCheck,
    pixel_limit,
    probe_images,
)
from embedlab.errors import EmbedlabError
from embedlab.io import atomic_path, read_json, write_json

REQUIRED_COLUMNS = ("label", "path", "split")
BBOX_COLUMNS = ("x_1", "y_1", "x_2", "y_2")
OPTIONAL_COLUMNS = ("is_query", "is_gallery", "category", "sequence", "class_name", *BBOX_COLUMNS)
SPLITS = ("train", "validation", "rerank")
"""``rerank``: train-side images the extractor never trains on, for the re-ranker's pairs."""
MANIFEST_NAME = "manifest.csv"
SIDECAR_NAME = "manifest.json"
MAX_LISTED = 10
"""How many offending rows or files one error line lists before it says '... and N more'."""


class ManifestError(EmbedlabError):
    """The manifest breaks the contract; the message names the file, line and column.

    ``rows`` is how many rows the problem concerns (0 when it is not about rows).
    """

    def __init__(self, message: str, rows: int = 0) -> None:
        super().__init__(message)
        self.rows = rows


class Problems:
    """Collects every problem of a manifest, to report all kinds in one error.

    >>> problems = Problems("m.csv")
    >>> problems.add("m.csv: line 3, column 'label': expected an integer", 1)
    >>> with problems.check():
    ...     raise ManifestError("m.csv: line 4, 6, column 'split': unknown value 'x'", 2)
    >>> problems.raise_if_any()
    Traceback (most recent call last):
    ...
    embedlab.data.manifest.ManifestError: m.csv: 2 kinds of problems (fix them all, ...): ...
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.found: list[ManifestError] = []

    def add(self, message: str, rows: int = 0) -> None:
        self.found.append(ManifestError(message, rows))

    @contextmanager
    def check(self) -> Iterator[None]:
        """Run a check; a :class:`ManifestError` it raises is kept, not raised."""
        try:
            yield
        except ManifestError as exc:
            self.found.append(exc)

    def raise_if_any(self) -> None:
        """One error holding every problem found (as it was, when there is one)."""
        if len(self.found) == 1:
            raise self.found[0]
        if self.found:
            prefix = f"{self.name}: "
            parts = []
            for problem in self.found:
                text = str(problem).removeprefix(prefix)
                count = f"[{problem.rows} row{'s' if problem.rows != 1 else ''}] "
                parts.append((count if problem.rows else "") + text)
            raise ManifestError(
                f"{self.name}: {len(self.found)} kinds of problems (fix them all, then rerun): "
                + "; ".join(parts),
                sum(p.rows for p in self.found),
            )


@dataclass(frozen=True)
class Manifest:
    """A validated manifest and the folder its relative paths start from."""

    df: pd.DataFrame
    dataset_root: Path
    source: Path | None = None

    def split(self, name: str) -> pd.DataFrame:
        """Rows of one split, with their manifest row number in a ``row_id`` column.

        >>> df = pd.DataFrame({"label": [0, 1, 1], "path": ["a", "b", "c"],
        ...                    "split": ["train", "validation", "validation"]})
        >>> Manifest(df, Path("/data")).split("validation")["row_id"].tolist()
        [1, 2]
        """
        mask = (self.df["split"] == name).to_numpy()
        return self.df[mask].assign(row_id=np.flatnonzero(mask))


def resolve_paths(paths: pd.Series, dataset_root: Path) -> list[str]:
    """Join relative paths with ``dataset_root``; absolute paths stay as they are.

    >>> resolve_paths(pd.Series(["a/1.png", "/abs/2.png"]), Path("/data"))
    ['/data/a/1.png', '/abs/2.png']
    """
    paths = paths.astype(str)
    if os.sep != "/":  # the vectorised form below is POSIX-only
        return [os.path.join(str(dataset_root), p) for p in paths.tolist()]
    prefix = str(dataset_root).rstrip("/") + "/"
    return np.where(paths.str.startswith("/"), paths, prefix + paths).tolist()


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
            f"expected true/false, got {series.iloc[pos[0]]!r}",
            len(pos),
        )
    return text.map(mapping).astype(bool)


def _shown(value: object) -> str:
    """A cell value for an error message; missing cells read 'an empty value'."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or str(value).strip() == "":
        return "an empty value"
    return repr(value)


def _integers(values: pd.Series, column: str, name: str) -> pd.Series:
    """``values`` as int64; a non-integer or empty cell is an error naming its line."""
    if pd.api.types.is_integer_dtype(values.dtype):
        return values.astype(np.int64)
    if isinstance(values.dtype, pd.StringDtype):
        try:  # fast path for CSV text; "1.5" or "" fail and take the checked path below
            return values.astype(np.int64)
        except (ValueError, TypeError, OverflowError):
            pass
    numbers = pd.to_numeric(values, errors="coerce")
    bad = numbers.isna() | (numbers.fillna(0) % 1 != 0)
    if bad.any():
        pos = np.flatnonzero(bad.to_numpy())
        raise ManifestError(
            f"{name}: line {_line(pos)}, column '{column}': expected an integer, "
            f"got {_shown(values.iloc[pos[0]])}",
            len(pos),
        )
    return numbers.astype(np.int64)


def _numbers(values: pd.Series, column: str, name: str) -> pd.Series:
    """``values`` as float64 (empty cells NaN); text that is not a number is an error."""
    try:
        return values.astype(np.float64)
    except (ValueError, TypeError):
        pass
    numbers = pd.to_numeric(values, errors="coerce")
    blank = values.isna() | (values.astype(str).str.strip() == "")
    bad = numbers.isna() & ~blank
    if bad.any():
        pos = np.flatnonzero(bad.to_numpy())
        raise ManifestError(
            f"{name}: line {_line(pos)}, column '{column}': expected a number, "
            f"got {values.iloc[pos[0]]!r}",
            len(pos),
        )
    return numbers.astype(np.float64)


def normalise_manifest(
    df: pd.DataFrame, name: str = MANIFEST_NAME, problems: Problems | None = None
) -> pd.DataFrame:
    """Check column types and values; return a copy with clean dtypes.

    Raises :class:`ManifestError` naming the line and column of the first kind of problem.

    >>> df = pd.DataFrame({"label": ["1", "1"], "path": ["a.png", "b.png"],
    ...                    "split": ["validation", "validation"]})
    >>> out = normalise_manifest(df)
    >>> out["label"].tolist(), out["is_query"].tolist()
    ([1, 1], [True, True])
    >>> normalise_manifest(df.assign(label=["1", ""]), name="m.csv")
    Traceback (most recent call last):
    ...
    embedlab.data.manifest.ManifestError: m.csv: line 3, column 'label': expected an integer, ...
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ManifestError(
            f"{name}: missing required column(s) {', '.join(missing)} "
            f"(found: {', '.join(map(str, df.columns))})"
        )
    df = df.reset_index(drop=True).copy()
    own = problems is None
    problems = Problems(name) if problems is None else problems
    with problems.check():
        df["label"] = _integers(df["label"], "label", name)
    with problems.check():
        _check_paths(df, name)
    df["path"] = df["path"].fillna("").astype(str)

    df["split"] = df["split"].fillna("").astype(str).str.strip()
    bad = ~df["split"].isin(SPLITS)
    if bad.any():
        pos = np.flatnonzero(bad.to_numpy())
        problems.add(
            f"{name}: line {_line(pos)}, column 'split': unknown value "
            f"{df['split'].iloc[pos[0]]!r} (expected one of {', '.join(SPLITS)})",
            len(pos),
        )

    is_val = df["split"] == "validation"
    for column in ("is_query", "is_gallery"):
        if column in df.columns:
            values = df[column].where(is_val, False)  # train rows: ignored
            with problems.check():
                df[column] = _parse_bool(values.fillna(True), column, name) & is_val
        else:  # no split info: every validation item is both query and gallery
            df[column] = is_val

    for column in ("category", "sequence", "class_name"):
        if column in df.columns:
            df[column] = df[column].fillna("").astype(str)

    present = [c for c in BBOX_COLUMNS if c in df.columns]
    if present:
        with problems.check():
            _normalise_bboxes(df, present, name)
    if own:
        problems.raise_if_any()
    return df


def _check_paths(df: pd.DataFrame, name: str) -> None:
    empty = df["path"].isna() | (df["path"].astype(str).str.strip() == "")
    if empty.any():
        pos = np.flatnonzero(empty)
        raise ManifestError(f"{name}: line {_line(pos)}, column 'path': empty", len(pos))
    paths = df["path"].astype(str)
    # "a/./b.png" and "a/b.png" are the same file: compare normalised paths (only the
    # few paths that normpath would change are passed through it).
    normal = paths.copy()
    odd = normal.str.contains(r"//|(?:^|/)\.{1,2}(?:/|$)|/$", regex=True)
    if odd.any():
        normal[odd] = [os.path.normpath(p) for p in normal[odd].tolist()]
    dup = normal.duplicated(keep="first")
    if dup.any():
        pos = np.flatnonzero(dup.to_numpy())
        raise ManifestError(
            f"{name}: line {_line(pos)}, column 'path': duplicate path {paths.iloc[pos[0]]!r}",
            len(pos),
        )


def _normalise_bboxes(df: pd.DataFrame, present: list[str], name: str) -> None:
    if len(present) != len(BBOX_COLUMNS):
        absent = [c for c in BBOX_COLUMNS if c not in present]
        raise ManifestError(
            f"{name}: bbox needs all of x_1, y_1, x_2, y_2; missing column(s) {', '.join(absent)}"
        )
    boxes = pd.DataFrame({c: _numbers(df[c], c, name) for c in BBOX_COLUMNS})
    n_set = boxes.notna().sum(axis=1)
    partial = (n_set > 0) & (n_set < 4)
    if partial.any():
        pos = np.flatnonzero(partial.to_numpy())
        row = boxes.iloc[pos[0]]
        empty_cols = [c for c in BBOX_COLUMNS if pd.isna(row[c])]
        raise ManifestError(
            f"{name}: line {_line(pos)}: partial bbox, column(s) {', '.join(empty_cols)} empty "
            "(give all four of x_1, y_1, x_2, y_2 or none)",
            len(pos),
        )
    full = n_set == 4
    inverted = full & ((boxes["x_2"] <= boxes["x_1"]) | (boxes["y_2"] <= boxes["y_1"]))
    negative = full & (boxes[list(BBOX_COLUMNS)] < 0).any(axis=1)
    bad = inverted | negative
    if bad.any():
        pos = np.flatnonzero(bad.to_numpy())
        raise ManifestError(
            f"{name}: line {_line(pos)}, columns x_1..y_2: bbox must have "
            f"0 <= x_1 < x_2 and 0 <= y_1 < y_2, got {boxes.iloc[pos[0]].tolist()}",
            len(pos),
        )
    for column in BBOX_COLUMNS:
        df[column] = boxes[column]


def check_splits(df: pd.DataFrame, name: str = MANIFEST_NAME, *, need_train: bool = True) -> None:
    """Check what training and validation need: enough train items, queries and galleries.

    A query whose label has no gallery item (other than itself) is a warning with a
    count; it is an error only when every query is like that.

    >>> df = pd.DataFrame({"label": [0, 0, 1], "split": ["train", "train", "validation"],
    ...                    "is_query": [False, False, True], "is_gallery": [False, False, False]})
    >>> check_splits(df, name="m.csv")
    Traceback (most recent call last):
    ...
    embedlab.data.manifest.ManifestError: m.csv: the validation split has no gallery ...
    """
    train = df[df["split"] == "train"]
    if need_train:
        if train.empty:
            raise ManifestError(f"{name}: the train split is empty (no row with split=train)")
        counts = train["label"].value_counts()
        single = counts[counts < 2].index.sort_values()
        if len(single):
            shown = [str(label) for label in single[:MAX_LISTED]]
            if "class_name" in train.columns:
                names = train.drop_duplicates("label").set_index("label")["class_name"]
                shown = [f"{label} ({names[label]})" for label in single[:MAX_LISTED]]
            more = f" and {len(single) - MAX_LISTED} more" if len(single) > MAX_LISTED else ""
            raise ManifestError(
                f"{name}: column 'label': train label(s) {', '.join(shown)}{more} have a single "
                "image; metric learning needs at least 2 per label"
            )
    val = df[df["split"] == "validation"]
    if val.empty:
        raise ManifestError(f"{name}: the validation split is empty (no row with split=validation)")
    queries, gallery = val[val["is_query"]], val[val["is_gallery"]]
    if queries.empty:
        raise ManifestError(
            f"{name}: the validation split has no query (is_query false on all {len(val)} "
            "validation rows)"
        )
    if gallery.empty:
        raise ManifestError(
            f"{name}: the validation split has no gallery (is_gallery false on all {len(val)} "
            "validation rows)"
        )
    n_relevant = count_gallery_matches(queries, gallery)
    lonely = int((n_relevant == 0).sum())
    if lonely == len(queries):
        raise ManifestError(
            f"{name}: none of the {len(queries)} validation queries has a gallery item "
            "with the same label (other than itself)"
        )
    if lonely:
        first = _line(queries.index[n_relevant == 0][:3].tolist())
        warnings.warn(
            f"{name}: {lonely} of {len(queries)} validation queries have no gallery item with "
            f"their label (e.g. line {first}); they are left out of the metric averages",
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


def check_files(
    paths: list[str],
    dataset_root: Path,
    name: str = MANIFEST_NAME,
    *,
    bboxes: np.ndarray | None = None,
    image_check: ImageCheck = "header",
) -> None:
    """Every path stays inside ``dataset_root`` (when relative), exists and is a usable image.

    Lists every missing file (up to :data:`MAX_LISTED`) in one line, then every unreadable
    or truncated one; with ``bboxes`` (n x 4: x_1, y_1, x_2, y_2, NaN for none), boxes that
    reach outside their image are errors too. ``image_check`` picks how hard each image is
    looked at (see :data:`ImageCheck`); ``"exists"`` cannot check bboxes.

    >>> import tempfile, pathlib
    >>> from PIL import Image
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> Image.new("RGB", (8, 6)).save(root / "a.png")
    >>> try:
    ...     check_files(["a.png"], root, "m.csv", bboxes=np.array([[0.0, 0.0, 9.0, 6.0]]))
    ... except ManifestError as exc:
    ...     print(exc)
    m.csv: 1 bbox(es) outside their image: line 2: a.png is 8x6, bbox x_2=9 > 8
    """
    if image_check not in IMAGE_CHECKS:
        raise ManifestError(
            f"image_check must be one of {', '.join(IMAGE_CHECKS)}, got {image_check!r}"
        )
    root = os.path.normpath(str(dataset_root))
    prefix = root.rstrip(os.sep) + os.sep
    escaping = [
        i
        for i, p in enumerate(paths)
        if ".." in p  # cheap filter first: most paths have no '..' at all
        and not os.path.isabs(p)
        and not os.path.normpath(os.path.join(root, p)).startswith(prefix)
    ]
    if escaping:
        raise ManifestError(
            f"{name}: line {_line(escaping)}, column 'path': {paths[escaping[0]]!r} escapes "
            f"dataset_root {dataset_root} through '..'"
        )
    absolute = resolve_paths(pd.Series(paths, dtype=object), Path(root))
    sizes, missing, unreadable = probe_images(absolute, image_check)
    problems = Problems(name)
    if missing:
        shown = ", ".join(f"line {i + 2}: {paths[i]}" for i in missing[:MAX_LISTED])
        more = f" and {len(missing) - MAX_LISTED} more" if len(missing) > MAX_LISTED else ""
        problems.add(
            f"{name}: {len(missing)} image file(s) missing under {dataset_root}: {shown}{more}",
            len(missing),
        )
    if unreadable:
        bad = sorted(unreadable)
        shown = ", ".join(f"line {i + 2}: {paths[i]} ({unreadable[i]})" for i in bad[:MAX_LISTED])
        more = f" and {len(bad) - MAX_LISTED} more" if len(bad) > MAX_LISTED else ""
        problems.add(
            f"{name}: {len(bad)} image file(s) unreadable or truncated: {shown}{more}", len(bad)
        )
    limit = pixel_limit()
    over = np.flatnonzero(sizes[:, 0] * sizes[:, 1] > limit)
    if over.size:
        shown = ", ".join(
            f"line {i + 2}: {paths[i]} is {sizes[i, 0]}x{sizes[i, 1]}" for i in over[:MAX_LISTED]
        )
        more = f" and {over.size - MAX_LISTED} more" if over.size > MAX_LISTED else ""
        problems.add(
            f"{name}: {over.size} image(s) over the limit of {limit} pixels (raise "
            f"{PIXEL_LIMIT_PARAM} if they are safe): {shown}{more}",
            int(over.size),
        )
    if bboxes is not None and image_check != "exists":
        with problems.check():
            _check_bboxes_inside(np.asarray(bboxes, dtype=float), sizes, paths, name)
    problems.raise_if_any()


def _check_bboxes_inside(boxes: np.ndarray, sizes: np.ndarray, paths: list[str], name: str) -> None:
    width, height = sizes[:, 0], sizes[:, 1]
    with np.errstate(invalid="ignore"):
        over_x = boxes[:, 2] > width
        over_y = boxes[:, 3] > height
    bad = np.flatnonzero((over_x | over_y) & ~np.isnan(boxes).any(axis=1))
    if not len(bad):
        return

    def one(i: int) -> str:
        axis, value, limit = (
            ("x_2", boxes[i, 2], width[i]) if over_x[i] else ("y_2", boxes[i, 3], height[i])
        )
        return (
            f"line {i + 2}: {paths[i]} is {width[i]}x{height[i]}, bbox {axis}={value:g} > {limit}"
        )

    shown = ", ".join(one(int(i)) for i in bad[:MAX_LISTED])
    more = f" and {len(bad) - MAX_LISTED} more" if len(bad) > MAX_LISTED else ""
    raise ManifestError(f"{name}: {len(bad)} bbox(es) outside their image: {shown}{more}")


def validate_manifest(
    df: pd.DataFrame,
    dataset_root: str | Path,
    name: str = MANIFEST_NAME,
    *,
    need_train: bool = True,
    image_check: ImageCheck | None = "header",
) -> pd.DataFrame:
    """Everything a manifest must satisfy, in order: columns and values, splits, files.

    Returns the normalised DataFrame. ``image_check=None`` skips the file checks. Every
    problem found is reported in one :class:`ManifestError` (each kind with its rows), so
    a large file needs one fix-and-rerun, not one per kind of problem.

    >>> import tempfile, pathlib
    >>> from PIL import Image
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for i in range(4):
    ...     Image.new("L", (4, 4)).save(root / f"{i}.png")
    >>> df = pd.DataFrame({"label": [0, 0, 1, 1], "path": [f"{i}.png" for i in range(4)],
    ...                    "split": ["train", "train", "validation", "validation"]})
    >>> validate_manifest(df, root)["is_query"].tolist()
    [False, False, True, True]
    """
    problems = Problems(name)
    df = normalise_manifest(df, name=name, problems=problems)
    if not problems.found:  # the split checks need clean labels and splits
        with problems.check():
            check_splits(df, name=name, need_train=need_train)
    if image_check is not None:
        has_bbox = all(c in df.columns for c in BBOX_COLUMNS)
        boxes = None
        if has_bbox:
            boxes = df[list(BBOX_COLUMNS)].apply(pd.to_numeric, errors="coerce").to_numpy(float)
        with problems.check():
            check_files(
                df["path"].tolist(),
                Path(dataset_root),
                name=name,
                bboxes=boxes,
                image_check=image_check,
            )
    problems.raise_if_any()
    return df


def load_manifest(
    path: str | Path,
    dataset_root: str | Path | None = None,
    *,
    need_train: bool = True,
    files: bool = True,
    image_check: ImageCheck = "header",
) -> Manifest:
    """Read and validate a manifest.

    ``dataset_root`` defaults to the one recorded in the ``manifest.json`` sidecar that
    ``prepare`` writes, else the manifest's own folder. ``files=False`` skips the file
    checks; ``image_check`` says how hard they look (see :func:`check_files`).
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found (run the prepare stage first)")
    raw = read_manifest_csv(path)
    if dataset_root is None:
        sidecar = path.with_name(SIDECAR_NAME)
        recorded = read_json(sidecar).get("dataset_root") if sidecar.is_file() else None
        # A recorded root is relative to the manifest's folder (an absolute one stays as is).
        dataset_root = path.parent / recorded if recorded else path.parent
    root = Path(dataset_root).resolve()
    df = validate_manifest(
        raw, root, name=str(path), need_train=need_train, image_check=image_check if files else None
    )
    return Manifest(df=df, dataset_root=root, source=path)


def read_manifest_csv(path: str | Path) -> pd.DataFrame:
    """Read a manifest CSV as text cells (empty cells become NaN), without validating it.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "m.csv"
    >>> _ = p.write_text("label,path,split\\n1,a.png,train\\n")
    >>> read_manifest_csv(p)["label"].tolist()
    ['1']
    """
    path = Path(path)
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except FileNotFoundError:
        raise ManifestError(f"{path}: manifest not found") from None
    except pd.errors.EmptyDataError:
        raise ManifestError(f"{path}: empty file (expected a CSV with a header line)") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ManifestError(
            f"{path}: not a readable CSV: {str(exc).strip().splitlines()[0]}"
        ) from None
    raw.columns = [str(c).strip() for c in raw.columns]
    return raw


def write_manifest(
    df: pd.DataFrame, out_dir: str | Path, dataset_root: str | Path, **info: object
) -> Path:
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
