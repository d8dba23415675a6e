"""Helpers shared by the converters of native dataset layouts.

Every problem with an input is an :class:`EmbedlabError` naming the file and the line.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from embedlab.errors import EmbedlabError

if TYPE_CHECKING:
    from embedlab.config import PrepareParams


class SourceError(EmbedlabError):
    """The input of a source is missing or not in the expected native format."""


def require_root(cfg: PrepareParams, what: str) -> Path:
    """``prepare.root`` as an existing folder, or a one-line error that says what is expected.

    >>> from embedlab.config import PrepareParams
    >>> require_root(PrepareParams(source="cub"), "the CUB_200_2011 folder")
    Traceback (most recent call last):
    ...
    embedlab.data.sources._native.SourceError: params.yaml: prepare.root: the 'cub' source needs ...
    """
    if not cfg.root:
        raise SourceError(
            f"params.yaml: prepare.root: the {cfg.source!r} source needs {what} "
            "(prepare.root is not set)"
        )
    root = Path(cfg.root).expanduser()
    if not root.exists():
        raise SourceError(f"{root}: not found (prepare.root for the {cfg.source!r} source)")
    if not root.is_dir():
        raise SourceError(f"{root}: not a folder (prepare.root for the {cfg.source!r} source)")
    return root


def find_layout(root: Path, marker: str, subfolders: Sequence[str], layout: str) -> Path:
    """The folder holding ``marker``: ``root`` or one of ``subfolders`` (an archive's top folder).

    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> (root / "CUB_200_2011").mkdir()
    >>> _ = (root / "CUB_200_2011" / "images.txt").write_text("")
    >>> find_layout(root, "images.txt", ["CUB_200_2011"], "CUB").name
    'CUB_200_2011'
    """
    for candidate in (root, *(root / s for s in subfolders)):
        if (candidate / marker).is_file():
            return candidate
    raise SourceError(f"{root / marker}: missing; prepare.root does not look like {layout}")


def require_file(folder: Path, name: str, layout: str) -> Path:
    """``folder / name`` when it is a file, else an error naming the missing file."""
    path = folder / name
    if not path.is_file():
        raise SourceError(f"{path}: missing; expected {layout}")
    return path


def read_table(
    path: Path,
    columns: Sequence[str],
    *,
    skip: int = 0,
    ints: Sequence[str] = (),
    floats: Sequence[str] = (),
) -> pd.DataFrame:
    """Read a whitespace-separated text table; bad lines are errors naming file, line and column.

    ``skip`` leading lines are ignored (counts, headers); blank lines are ignored. The last
    column takes the rest of the line, so it may hold spaces. A ``line`` column keeps
    each row's line number in the file.

    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "t.txt"
    >>> _ = p.write_text("1 a/b.jpg\\n2 c d.jpg\\n")
    >>> read_table(p, ["id", "path"], ints=["id"])[["id", "path"]].values.tolist()
    [[1, 'a/b.jpg'], [2, 'c d.jpg']]
    >>> _ = p.write_text("1 a.jpg\\nx b.jpg\\n")
    >>> read_table(p, ["id", "path"], ints=["id"])
    Traceback (most recent call last):
    ...
    embedlab.data.sources._native.SourceError: ...t.txt: line 2, column 'id': ... got 'x'
    """
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SourceError(f"{path}: not a UTF-8 text file ({exc.reason})") from None
    except OSError as exc:
        raise SourceError(f"{path}: cannot read ({exc.strerror})") from None
    rows, lines = [], []
    n = len(columns)
    for number, line in enumerate(text.splitlines()[skip:], start=skip + 1):
        if not line.strip():
            continue
        fields = line.split(None, n - 1)
        if len(fields) != n:
            raise SourceError(
                f"{path}: line {number}: expected {n} fields ({' '.join(columns)}), "
                f"got {len(fields)}: {line.strip()[:80]!r}"
            )
        rows.append(fields)
        lines.append(number)
    if not rows:
        raise SourceError(f"{path}: no data lines (expected: {' '.join(columns)})")
    df = pd.DataFrame(rows, columns=list(columns))
    for column, kind in [(c, "an integer") for c in ints] + [(c, "a number") for c in floats]:
        values = pd.to_numeric(df[column], errors="coerce")
        bad = values.isna() | ((values % 1 != 0) if column in ints else False)
        if bad.any():
            first = int(bad.to_numpy().nonzero()[0][0])
            raise SourceError(
                f"{path}: line {lines[first]}, column '{column}': expected {kind}, "
                f"got {df[column].iloc[first]!r}"
            )
        df[column] = values.astype("int64") if column in ints else values.astype(float)
    df["line"] = lines
    return df


def duplicated_key(df: pd.DataFrame, key: str, path: Path) -> None:
    """Error on the first repeated ``key`` value, naming its line in ``path``."""
    dup = df[key].duplicated()
    if dup.any():
        row = df[dup].iloc[0]
        raise SourceError(f"{path}: line {row['line']}, column '{key}': duplicate {row[key]!r}")
