from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from embedlab.data.manifest import ManifestError, load_manifest, normalise_manifest, write_manifest


def _write_images(root: Path, names: list[str]) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), "white").save(root / name)


def _frame(**extra: list) -> pd.DataFrame:
    base = {
        "label": [0, 0, 1, 1, 2, 2],
        "path": [f"{i}.png" for i in range(6)],
        "split": ["train"] * 4 + ["validation"] * 2,
    }
    base.update(extra)
    return pd.DataFrame(base)


def _manifest(tmp_path: Path, df: pd.DataFrame) -> Path:
    _write_images(tmp_path, [p for p in df["path"] if isinstance(p, str) and p])
    path = tmp_path / "manifest.csv"
    df.to_csv(path, index=False)
    return path


def test_valid_manifest_loads_with_defaults(tmp_path: Path) -> None:
    manifest = load_manifest(_manifest(tmp_path, _frame()))
    df = manifest.df
    assert df["label"].dtype == "int64"
    # no split info: every validation row is both query and gallery; train rows neither
    assert df["is_query"].tolist() == [False] * 4 + [True] * 2
    assert df["is_gallery"].tolist() == [False] * 4 + [True] * 2
    assert manifest.dataset_root == tmp_path.resolve()
    assert manifest.absolute_paths()[0] == str(tmp_path.resolve() / "0.png")


@pytest.mark.parametrize(
    ("df", "pattern"),
    [
        (_frame().drop(columns=["split"]), r"missing required column\(s\) split"),
        (_frame(split=["train"] * 4 + ["val", "validation"]), r"line 6, column 'split': unknown value 'val'"),
        (_frame(label=[0, 0, 1, 1, "x", 2]), r"line 6, column 'label': expected an integer, got 'x'"),
        (_frame(label=[0, 0, 1, 1, 1.5, 2]), r"line 6, column 'label'"),
        (_frame(path=["0.png", "0.png", "2.png", "3.png", "4.png", "5.png"]), r"line 3, column 'path': duplicate"),
        (_frame(is_query=["true"] * 5 + ["maybe"]), r"line 7, column 'is_query': expected true/false"),
    ],
)
def test_bad_columns_name_line_and_column(df: pd.DataFrame, pattern: str) -> None:
    with pytest.raises(ManifestError, match=pattern):
        normalise_manifest(df, name="m.csv")


def test_partial_and_inverted_bbox() -> None:
    boxes = {"x_1": [0, 0, 0, 0, 0, None], "y_1": [0] * 6, "x_2": [4] * 6, "y_2": [4] * 6}
    with pytest.raises(ManifestError, match=r"line 7: partial bbox, column\(s\) x_1 empty"):
        normalise_manifest(_frame(**boxes), name="m.csv")
    boxes = {"x_1": [0, 0, 0, 0, 5, 0], "y_1": [0] * 6, "x_2": [4] * 6, "y_2": [4] * 6}
    with pytest.raises(ManifestError, match=r"line 6, columns x_1..y_2: bbox must have"):
        normalise_manifest(_frame(**boxes), name="m.csv")


def test_missing_files_are_all_listed(tmp_path: Path) -> None:
    path = _manifest(tmp_path, _frame())
    for name in ("1.png", "4.png"):
        (tmp_path / name).unlink()
    with pytest.raises(ManifestError, match=r"2 image file\(s\) missing .*line 3: 1.png, line 6: 4.png"):
        load_manifest(path)


def test_split_problems(tmp_path: Path) -> None:
    single = _frame(label=[0, 0, 1, 3, 2, 2])
    with pytest.raises(ManifestError, match=r"train label\(s\) 1, 3 have a single image"):
        load_manifest(_manifest(tmp_path, single))
    no_gallery = _frame(is_gallery=[False] * 6)
    with pytest.raises(ManifestError, match="no gallery"):
        load_manifest(_manifest(tmp_path, no_gallery))
    lonely = _frame(label=[0, 0, 1, 1, 2, 3])
    with pytest.raises(ManifestError, match="none of the 2 validation queries"):
        load_manifest(_manifest(tmp_path, lonely))


def test_some_lonely_queries_warn_with_a_count(tmp_path: Path) -> None:
    df = pd.concat([_frame(), pd.DataFrame({"label": [9], "path": ["9.png"], "split": ["validation"]})])
    with pytest.warns(UserWarning, match="1 of 3 validation queries have no gallery item"):
        load_manifest(_manifest(tmp_path, df))


def test_path_escaping_dataset_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    _write_images(tmp_path, ["outside.png"])
    df = _frame(path=["../outside.png", "1.png", "2.png", "3.png", "4.png", "5.png"])
    _write_images(root, [f"{i}.png" for i in range(1, 6)])
    df.to_csv(root / "manifest.csv", index=False)
    with pytest.raises(ManifestError, match=r"line 2, column 'path': '../outside.png' escapes dataset_root"):
        load_manifest(root / "manifest.csv")


def test_write_manifest_records_a_relative_root(tmp_path: Path) -> None:
    _write_images(tmp_path / "images", [f"{i}.png" for i in range(6)])
    df = _frame(path=[f"images/{i}.png" for i in range(6)])
    write_manifest(df, tmp_path, tmp_path)
    moved = tmp_path.parent / (tmp_path.name + "-moved")
    tmp_path.rename(moved)
    assert load_manifest(moved / "manifest.csv").dataset_root == moved.resolve()
