"""Each source on a tiny folder in its native format, built here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from embedlab.config import PrepareParams, parse_params
from embedlab.data.manifest import load_manifest, validate_manifest
from embedlab.data.sources import SOURCES, get_source
from embedlab.data.sources._native import SourceError
from embedlab.errors import EmbedlabError
from embedlab.stages.prepare import run_prepare


def _img(path: Path, size: tuple[int, int] = (20, 16)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (120, 40, 200)).save(path)


def _run(source: str, root: Path, out: Path, **cfg: object) -> pd.DataFrame:
    prepared = get_source(source)(PrepareParams(source=source, root=str(root), **cfg), out)
    # every converter's output must pass the manifest contract, files included
    return validate_manifest(prepared.df, prepared.dataset_root, name=f"{source} manifest")


def test_every_registered_source_resolves() -> None:
    assert set(SOURCES) == {
        "digits",
        "fashion_mnist",
        "imagefolder",
        "csv",
        "cub",
        "sop",
        "cars",
        "inshop",
    }
    for name in SOURCES:
        assert callable(get_source(name))


# --- imagefolder -------------------------------------------------------------------------
def _imagefolder(root: Path, classes: int = 6, per_class: int = 3) -> Path:
    for c in range(classes):
        for i in range(per_class):
            _img(root / f"class_{c}" / f"{i}.png")
    (root / "class_0" / "README.txt").write_text("not an image")
    return root


def test_imagefolder_splits_open_set_by_class_with_a_seed(tmp_path: Path) -> None:
    root = _imagefolder(tmp_path / "in")
    df = _run("imagefolder", root, tmp_path, val_fraction=0.5, split_seed=3)
    assert len(df) == 18  # README.txt skipped
    assert df["label"].dtype == np.int64
    assert sorted(df["class_name"].unique()) == [f"class_{c}" for c in range(6)]
    # labels follow the sorted class names; each class lies in one split only
    assert (df["label"] == df["class_name"].str.removeprefix("class_").astype(int)).all()
    per_class = df.groupby("class_name")["split"].nunique()
    assert (per_class == 1).all()
    val = df[df["split"] == "validation"]
    assert val["class_name"].nunique() == 3
    assert val["is_query"].all() and val["is_gallery"].all()
    assert not df.loc[df["split"] == "train", "is_query"].any()
    assert df["path"].iloc[0] == "class_0/0.png"  # relative to root
    again = _run("imagefolder", root, tmp_path, val_fraction=0.5, split_seed=3)
    assert again.equals(df)
    held = {
        s: set(
            _run("imagefolder", root, tmp_path, split_seed=s).query("split == 'validation'")[
                "class_name"
            ]
        )
        for s in range(6)
    }
    assert len({frozenset(v) for v in held.values()}) > 1  # the seed matters


def test_imagefolder_split_seed_null_follows_the_global_seed(workdir: Path) -> None:
    _imagefolder(workdir / "in")
    splits = []
    for seed in (0, 0, 1, 2):
        prepare = {"source": "imagefolder", "root": "in", "split_seed": None}
        params = parse_params({"seed": seed, "prepare": prepare})
        df = load_manifest(run_prepare(params, workdir)).df
        splits.append(frozenset(df.loc[df["split"] == "validation", "class_name"]))
    assert splits[0] == splits[1]
    assert len(set(splits)) > 1


def test_replicates_share_the_split_by_default(workdir: Path) -> None:
    _imagefolder(workdir / "in")
    splits = set()
    for seed in (0, 1, 2):
        params = parse_params({"seed": seed, "prepare": {"source": "imagefolder", "root": "in"}})
        df = load_manifest(run_prepare(params, workdir)).df
        splits.add(frozenset(df.loc[df["split"] == "validation", "class_name"]))
    assert len(splits) == 1  # split_seed 0: runs differing only in seed are replicates


def test_imagefolder_needs_two_class_folders(tmp_path: Path) -> None:
    _img(tmp_path / "only" / "a.png")
    _img(tmp_path / "loose.png")
    with pytest.raises(
        SourceError, match=r"at least 2 class folders of images; found 1 with images"
    ):
        _run("imagefolder", tmp_path, tmp_path / "out")


# --- csv ---------------------------------------------------------------------------------
def test_csv_passes_an_existing_manifest_through(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for i in range(6):
        _img(data / "imgs" / f"{i}.png")
    df = pd.DataFrame(
        {
            "label": [0, 0, 1, 1, 2, 2],
            "path": [f"imgs/{i}.png" for i in range(6)],
            "split": ["train"] * 4 + ["validation"] * 2,
            "is_query": ["", "", "", "", "True", "False"],
            "is_gallery": ["", "", "", "", "True", "True"],
            "category": ["a"] * 6,
        }
    )
    df.to_csv(data / "mine.csv", index=False)
    out = _run("csv", data / "mine.csv", tmp_path / "out")
    assert out["path"].tolist() == df["path"].tolist()  # relative stays relative
    assert out["is_query"].tolist() == [False] * 4 + [True, False]
    # dataset_root elsewhere: the CSV moves, the images don't
    (tmp_path / "meta").mkdir()
    (data / "mine.csv").rename(tmp_path / "meta" / "mine.csv")
    prepared = get_source("csv")(
        PrepareParams(
            source="csv", root=str(tmp_path / "meta" / "mine.csv"), dataset_root=str(data)
        ),
        tmp_path,
    )
    assert prepared.dataset_root == data.resolve()
    assert prepared.name == str(tmp_path / "meta" / "mine.csv")


# --- CUB-200-2011 --------------------------------------------------------------------------
def _cub(top: Path, boxes: bool = True) -> Path:
    root = top / "CUB_200_2011"
    classes = {1: "001.Albatross", 2: "002.Auklet", 101: "101.Wren", 102: "102.Finch"}
    images, labels, bbox = [], [], []
    image_id = 0
    for class_id, name in classes.items():
        for k in range(2):
            image_id += 1
            rel = f"{name}/{name}_{k}.jpg"
            _img(root / "images" / rel, (40, 30))
            images.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {class_id}")
            bbox.append(f"{image_id} 2.0 3.0 {10 + k}.0 20.0")
    (root / "images.txt").write_text("\n".join(images) + "\n")
    (root / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (root / "classes.txt").write_text("\n".join(f"{c} {n}" for c, n in classes.items()) + "\n")
    if boxes:
        (root / "bounding_boxes.txt").write_text("\n".join(bbox) + "\n")
    return root


def test_cub_standard_split_and_boxes(tmp_path: Path) -> None:
    root = _cub(tmp_path / "in")
    df = _run("cub", tmp_path / "in", tmp_path)  # the archive's parent folder works too
    assert df["label"].tolist() == [1, 1, 2, 2, 101, 101, 102, 102]
    assert df["split"].tolist() == ["train"] * 4 + ["validation"] * 4
    assert df["path"].iloc[0] == "images/001.Albatross/001.Albatross_0.jpg"
    assert df["class_name"].iloc[-1] == "102.Finch"
    # x, y, w, h -> x_1, y_1, x_2, y_2
    assert df.loc[1, ["x_1", "y_1", "x_2", "y_2"]].tolist() == [2.0, 3.0, 13.0, 23.0]
    assert df.loc[df["split"] == "validation", "is_query"].all()
    (root / "bounding_boxes.txt").unlink()
    assert "x_1" not in _run("cub", root, tmp_path).columns


def test_cub_names_the_missing_or_malformed_file(tmp_path: Path) -> None:
    root = _cub(tmp_path)
    (root / "image_class_labels.txt").unlink()
    with pytest.raises(
        SourceError, match=r"image_class_labels.txt: missing; expected CUB-200-2011"
    ):
        _run("cub", root, tmp_path)
    root = _cub(tmp_path / "b")
    (root / "bounding_boxes.txt").write_text("1 2.0 3.0 10.0\n")
    with pytest.raises(SourceError, match=r"bounding_boxes.txt: line 1: expected 5 fields"):
        _run("cub", root, tmp_path)
    with pytest.raises(
        SourceError, match=r"images.txt: missing; prepare.root does not look like CUB"
    ):
        _run("cub", tmp_path / "b" / "CUB_200_2011" / "images", tmp_path)


# --- Stanford Online Products ------------------------------------------------------------
def _sop(root: Path) -> Path:
    header = "image_id class_id super_class_id path"
    train = [
        header,
        "1 1 1 bicycle_final/1_0.JPG",
        "2 1 1 bicycle_final/1_1.JPG",
        "3 2 2 chair_final/2_0.JPG",
        "4 2 2 chair_final/2_1.JPG",
    ]
    test = [
        header,
        "5 3 1 bicycle_final/3_0.JPG",
        "6 3 1 bicycle_final/3_1.JPG",
        "7 4 2 chair_final/4_0.JPG",
        "8 4 2 chair_final/4_1.JPG",
    ]
    for line in train[1:] + test[1:]:
        _img(root / line.split()[-1])
    (root / "Ebay_train.txt").write_text("\n".join(train) + "\n")
    (root / "Ebay_test.txt").write_text("\n".join(test) + "\n")
    return root


def test_sop_train_and_test_as_given(tmp_path: Path) -> None:
    root = _sop(tmp_path / "Stanford_Online_Products")
    df = _run("sop", root, tmp_path)
    assert df["label"].tolist() == [1, 1, 2, 2, 3, 3, 4, 4]
    assert df["split"].tolist() == ["train"] * 4 + ["validation"] * 4
    assert df["category"].tolist() == ["1", "1", "2", "2"] * 2
    assert df["path"].iloc[4] == "bicycle_final/3_0.JPG"
    (root / "Ebay_test.txt").unlink()
    with pytest.raises(SourceError, match=r"Ebay_test.txt: missing"):
        _run("sop", root, tmp_path)


# --- Cars196 -----------------------------------------------------------------------------
def _cars(root: Path) -> Path:
    from scipy.io import savemat

    fields = ["relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test"]
    rows = []
    for i, cls in enumerate([1, 1, 2, 2, 99, 99, 196, 196]):
        rel = f"car_ims/{i + 1:06d}.jpg"
        _img(root / rel, (50, 40))
        rows.append((rel, 3, 4, 30 + i, 35, cls, i % 2))
    annotations = np.zeros((1, len(rows)), dtype=[(f, "O") for f in fields])
    for i, row in enumerate(rows):
        annotations[0, i] = row
    names = np.array([f"Car {c}" for c in range(1, 197)], dtype=object).reshape(1, -1)
    savemat(str(root / "cars_annos.mat"), {"annotations": annotations, "class_names": names})
    return root


def test_cars_standard_split_and_boxes(tmp_path: Path) -> None:
    root = _cars(tmp_path / "cars")
    df = _run("cars", root, tmp_path)
    assert df["label"].tolist() == [1, 1, 2, 2, 99, 99, 196, 196]
    assert df["split"].tolist() == ["train"] * 4 + ["validation"] * 4  # the `test` flag is ignored
    assert df.loc[2, ["x_1", "y_1", "x_2", "y_2"]].tolist() == [3.0, 4.0, 32.0, 35.0]
    assert df["class_name"].iloc[-1] == "Car 196"
    assert df["path"].iloc[0] == "car_ims/000001.jpg"


def test_cars_rejects_a_file_that_is_not_matlab(tmp_path: Path) -> None:
    (tmp_path / "cars_annos.mat").write_bytes(b"not a mat file at all")
    with pytest.raises(SourceError, match=r"cars_annos.mat: not a readable MATLAB file"):
        _run("cars", tmp_path, tmp_path)
    with pytest.raises(
        SourceError, match=r"cars_annos.mat: missing; prepare.root does not look like Cars196"
    ):
        _run("cars", tmp_path / "..", tmp_path)


# --- DeepFashion In-shop -----------------------------------------------------------------
def _inshop(root: Path, boxes: bool = True) -> Path:
    lines = [
        ("img/WOMEN/Dresses/id_00000002/01_1_front.jpg", "id_00000002", "train"),
        ("img/WOMEN/Dresses/id_00000002/02_2_side.jpg", "id_00000002", "train"),
        ("img/MEN/Denim/id_00000007/01_1_front.jpg", "id_00000007", "train"),
        ("img/MEN/Denim/id_00000007/02_1_back.jpg", "id_00000007", "train"),
        ("img/WOMEN/Skirts/id_00000010/01_1_front.jpg", "id_00000010", "query"),
        ("img/WOMEN/Skirts/id_00000010/02_2_side.jpg", "id_00000010", "gallery"),
        ("img/MEN/Tees/id_00000011/01_1_front.jpg", "id_00000011", "query"),
        ("img/MEN/Tees/id_00000011/02_4_full.jpg", "id_00000011", "gallery"),
    ]
    for path, _, _ in lines:
        _img(root / path, (64, 64))
    text = [str(len(lines)), "image_name item_id evaluation_status"]
    text += [f"{p}    {i}   {s}" for p, i, s in lines]
    (root / "Eval").mkdir(parents=True, exist_ok=True)
    (root / "Eval" / "list_eval_partition.txt").write_text("\n".join(text) + "\n")
    if boxes:
        rows = [str(len(lines)), "image_name  clothes_type  pose_type  x_1  y_1  x_2  y_2"]
        rows += [f"{p}   1  1  010  012  050  060" for p, _, _ in lines[:-1]]  # last one: no box
        (root / "list_bbox_inshop.txt").write_text("\n".join(rows) + "\n")
    return root


def test_inshop_train_query_gallery_as_given(tmp_path: Path) -> None:
    root = _inshop(tmp_path / "inshop")
    df = _run("inshop", root, tmp_path)
    assert df["label"].tolist() == [2, 2, 7, 7, 10, 10, 11, 11]
    assert df["split"].tolist() == ["train"] * 4 + ["validation"] * 4
    assert df["is_query"].tolist() == [False] * 4 + [True, False, True, False]
    assert df["is_gallery"].tolist() == [False] * 4 + [False, True, False, True]
    assert df["class_name"].iloc[0] == "id_00000002"
    assert df.loc[0, ["x_1", "y_1", "x_2", "y_2"]].tolist() == [10.0, 12.0, 50.0, 60.0]
    assert df.loc[7, ["x_1", "y_1", "x_2", "y_2"]].isna().all()


def test_inshop_unknown_status_names_the_line(tmp_path: Path) -> None:
    root = _inshop(tmp_path, boxes=False)
    partition = root / "Eval" / "list_eval_partition.txt"
    partition.write_text(partition.read_text().replace("gallery\n", "galery\n", 1))
    with pytest.raises(
        SourceError,
        match=r"list_eval_partition.txt: line 8, column 'evaluation_status': unknown value 'galery",
    ):
        _run("inshop", root, tmp_path)


@pytest.mark.parametrize("source", ["imagefolder", "csv", "cub", "sop", "cars", "inshop"])
def test_root_not_set_or_missing_is_one_clear_line(source: str, tmp_path: Path) -> None:
    with pytest.raises(EmbedlabError, match=r"^params.yaml: prepare.root: the '\w+' source needs"):
        get_source(source)(PrepareParams(source=source), tmp_path)
    with pytest.raises(
        EmbedlabError, match=r"nowhere: not found \(prepare.root for the '\w+' source\)"
    ):
        get_source(source)(PrepareParams(source=source, root=str(tmp_path / "nowhere")), tmp_path)
