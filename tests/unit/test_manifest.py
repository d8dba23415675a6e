from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from embedlab.data.image_checks import image_size
from embedlab.data.manifest import (
    ManifestError,
    check_files,
    load_manifest,
    normalise_manifest,
    validate_manifest,
    write_manifest,
)


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
    assert manifest.split("validation")["row_id"].tolist() == [4, 5]


@pytest.mark.parametrize(
    ("df", "pattern"),
    [
        (_frame().drop(columns=["split"]), r"missing required column\(s\) split"),
        (
            _frame(split=["train"] * 4 + ["val", "validation"]),
            r"line 6, column 'split': unknown value 'val'",
        ),
        (
            _frame(label=[0, 0, 1, 1, "x", 2]),
            r"line 6, column 'label': expected an integer, got 'x'",
        ),
        (_frame(label=[0, 0, 1, 1, 1.5, 2]), r"line 6, column 'label'"),
        (
            _frame(path=["0.png", "0.png", "2.png", "3.png", "4.png", "5.png"]),
            r"line 3, column 'path': duplicate",
        ),
        (
            _frame(is_query=["true"] * 5 + ["maybe"]),
            r"line 7, column 'is_query': expected true/false",
        ),
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
    with pytest.raises(
        ManifestError, match=r"2 image file\(s\) missing .*line 3: 1.png, line 6: 4.png"
    ):
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
    df = pd.concat(
        [_frame(), pd.DataFrame({"label": [9], "path": ["9.png"], "split": ["validation"]})]
    )
    with pytest.warns(UserWarning, match="1 of 3 validation queries have no gallery item"):
        load_manifest(_manifest(tmp_path, df))


def test_path_escaping_dataset_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    _write_images(tmp_path, ["outside.png"])
    df = _frame(path=["../outside.png", "1.png", "2.png", "3.png", "4.png", "5.png"])
    _write_images(root, [f"{i}.png" for i in range(1, 6)])
    df.to_csv(root / "manifest.csv", index=False)
    with pytest.raises(
        ManifestError, match=r"line 2, column 'path': '../outside.png' escapes dataset_root"
    ):
        load_manifest(root / "manifest.csv")


def test_write_manifest_records_a_relative_root(tmp_path: Path) -> None:
    _write_images(tmp_path / "images", [f"{i}.png" for i in range(6)])
    df = _frame(path=[f"images/{i}.png" for i in range(6)])
    write_manifest(df, tmp_path, tmp_path)
    moved = tmp_path.parent / (tmp_path.name + "-moved")
    tmp_path.rename(moved)
    assert load_manifest(moved / "manifest.csv").dataset_root == moved.resolve()


@pytest.mark.parametrize("sidecar", [False, True], ids=["bare-csv", "prepared"])
def test_a_relative_manifest_path_finds_its_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sidecar: bool
) -> None:
    # load_manifest(Path("mf/m.csv")) from the folder above: images sit beside the CSV.
    folder = tmp_path / "mf"
    folder.mkdir()
    _manifest(folder, _frame())
    if sidecar:
        write_manifest(_frame(), folder, folder)
    monkeypatch.chdir(tmp_path)
    manifest = load_manifest(Path("mf/manifest.csv"))
    assert manifest.dataset_root == folder.resolve()
    assert len(manifest.df) == 6


# --- image files: header checks, truncation, bboxes ----------------------------------------
def _save(path: Path, fmt: str, size: tuple[int, int] = (12, 9), **kwargs: object) -> Path:
    Image.new("RGB", size, (30, 60, 90)).save(path, fmt, **kwargs)
    return path


@pytest.mark.parametrize(
    ("fmt", "kwargs"),
    [
        ("PNG", {}),
        ("JPEG", {}),
        ("JPEG", {"progressive": True}),
        ("JPEG", {"exif": b"Exif\x00\x00" + b"\x00" * 9000}),  # frame header beyond the first 4 KiB
        ("GIF", {}),
        ("BMP", {}),  # not parsed by us: PIL's lazy open
        ("WEBP", {}),
    ],
)
def test_image_size_reads_headers(tmp_path: Path, fmt: str, kwargs: dict) -> None:
    path = _save(tmp_path / f"a.{fmt.lower()}", fmt, **kwargs)
    assert image_size(str(path)) == (12, 9)


def test_trailing_bytes_after_the_end_marker_are_fine(tmp_path: Path) -> None:
    path = _save(tmp_path / "a.jpg", "JPEG")
    path.write_bytes(path.read_bytes() + b"camera trailer data")
    assert image_size(str(path)) == (12, 9)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF"])
def test_truncated_images_are_caught(tmp_path: Path, fmt: str) -> None:
    path = _save(tmp_path / "a.img", fmt, size=(64, 48))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ValueError, match="cannot decode"):
        image_size(str(path))


def test_check_levels_exists_header_decode(tmp_path: Path) -> None:
    good = _save(tmp_path / "good.png", "PNG", size=(32, 32))
    # corrupt the compressed pixels but keep the header and the end marker intact
    data = bytearray(good.read_bytes())
    start = data.index(b"IDAT") + 8
    data[start : start + 20] = b"\xff" * 20
    (tmp_path / "bad.png").write_bytes(bytes(data))
    (tmp_path / "empty.png").write_bytes(b"")
    check_files(["bad.png"], tmp_path, "m.csv", image_check="header")  # header is fine
    with pytest.raises(
        ManifestError,
        match=r"m.csv: 1 image file\(s\) unreadable .*line 2: bad.png \(cannot decode",
    ):
        check_files(["bad.png"], tmp_path, "m.csv", image_check="decode")
    check_files(["empty.png"], tmp_path, "m.csv", image_check="exists")
    with pytest.raises(ManifestError, match=r"line 2: empty.png \(empty file\)"):
        check_files(["empty.png"], tmp_path, "m.csv")


def test_many_missing_files_are_counted_and_capped(tmp_path: Path) -> None:
    (tmp_path / "folder.png").mkdir()  # a folder is not an image file
    paths = ["folder.png"] + [f"gone/{i}.png" for i in range(5000)]  # several threads' worth
    with pytest.raises(ManifestError) as info:
        check_files(paths, tmp_path, "m.csv")
    message = str(info.value)
    assert message.startswith("m.csv: 5001 image file(s) missing under")
    assert "line 2: folder.png, line 3: gone/0.png" in message
    assert message.endswith("line 11: gone/8.png and 4991 more")
    assert "\n" not in message


def test_bbox_outside_its_image_is_caught_on_load(tmp_path: Path) -> None:
    df = _frame(x_1=[0] * 6, y_1=[0] * 6, x_2=[8, 8, 8, 9, 8, None], y_2=[8, 8, 8, 8, 8, None])
    path = _manifest(tmp_path, df.assign(x_1=[0, 0, 0, 0, 0, None], y_1=[0, 0, 0, 0, 0, None]))
    with pytest.raises(
        ManifestError,
        match=r"1 bbox\(es\) outside their image: line 5: 3.png is 8x8, bbox x_2=9 > 8",
    ):
        load_manifest(path)


def test_non_numeric_bbox_names_the_column() -> None:
    boxes = {
        "x_1": [0] * 6,
        "y_1": ["0", "0", "zero", "0", "0", "0"],
        "x_2": [4] * 6,
        "y_2": [4] * 6,
    }
    with pytest.raises(ManifestError, match=r"line 4, column 'y_1': expected a number, got 'zero'"):
        normalise_manifest(_frame(**boxes), name="m.csv")


def test_labels_from_csv_text(tmp_path: Path) -> None:
    path = _manifest(tmp_path, _frame())
    path.write_text(path.read_text().replace("\n2,4.png", "\n2.5,4.png"))
    with pytest.raises(
        ManifestError, match=r"line 6, column 'label': expected an integer, got '2.5'"
    ):
        load_manifest(path)


def test_validate_manifest_runs_every_check_in_order(tmp_path: Path) -> None:
    _write_images(tmp_path, [f"{i}.png" for i in range(6)])
    out = validate_manifest(_frame(), tmp_path, name="m.csv")
    assert out["is_gallery"].tolist() == [False] * 4 + [True] * 2
    with pytest.raises(ManifestError, match="train split is empty"):  # splits before files
        validate_manifest(
            _frame(split=["validation"] * 6, path=[f"x{i}.png" for i in range(6)]), tmp_path
        )
