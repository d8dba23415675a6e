from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from embedlab.config import PrepareParams
from embedlab.data.datasets import DatasetQueryGallery, DatasetWithLabels, ImageReadError
from embedlab.data.sources import get_source
from embedlab.data.sources.digits import prepare_digits
from embedlab.data.transforms import eval_transform
from embedlab.errors import EmbedlabError


def test_digits_source_is_open_set(tmp_path: Path) -> None:
    prepared = prepare_digits(PrepareParams(digits_image_size=16), tmp_path)
    df = prepared.df
    assert len(df) == 1797
    assert set(df[df["split"] == "train"]["label"]) == {0, 1, 2, 3, 4}
    val = df[df["split"] == "validation"]
    assert set(val["label"]) == {5, 6, 7, 8, 9}
    assert val["is_query"].all() and val["is_gallery"].all()
    with Image.open(tmp_path / df["path"].iloc[0]) as image:
        assert image.size == (16, 16)


def test_unknown_source_is_a_clear_error() -> None:
    with pytest.raises(EmbedlabError, match="unknown source 'nope'"):
        get_source("nope")


def test_query_gallery_items_and_bbox_crop(tmp_path: Path) -> None:
    image = np.zeros((10, 20, 3), dtype=np.uint8)
    image[:, 10:] = 255  # right half white
    Image.fromarray(image).save(tmp_path / "a.png")
    Image.fromarray(image).save(tmp_path / "b.png")
    df = pd.DataFrame(
        {
            "label": [1, 1],
            "path": ["a.png", "b.png"],
            "is_query": [True, False],
            "is_gallery": [True, True],
            "category": ["x", "y"],
            "x_1": [10.0, np.nan],
            "y_1": [0.0, np.nan],
            "x_2": [20.0, np.nan],
            "y_2": [10.0, np.nan],
        }
    )
    ds = DatasetQueryGallery(df, tmp_path)
    first, second = ds[0], ds[1]
    assert first["is_query"] and not second["is_query"]
    assert first["categories"] == "x" and first["sequence"] == ""
    assert first["input_tensors"].size == (10, 10)  # cropped to the white half
    assert np.asarray(first["input_tensors"]).min() == 255
    assert second["input_tensors"].size == (20, 10)  # no bbox: whole image


def test_unreadable_image_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    ds = DatasetWithLabels(pd.DataFrame({"label": [0], "path": ["bad.png"]}), tmp_path)
    with pytest.raises(ImageReadError, match=r"bad.png: cannot read image"):
        ds[0]


def test_eval_transform_shapes_grayscale_to_rgb(tmp_path: Path) -> None:
    Image.new("L", (8, 8), 128).save(tmp_path / "g.png")
    pre = {"input_size": [3, 16, 16], "mean": [0.5] * 3, "std": [0.5] * 3}
    ds = DatasetWithLabels(
        pd.DataFrame({"label": [0], "path": ["g.png"]}), tmp_path, eval_transform(pre)
    )
    tensor = ds[0]["input_tensors"]
    assert tuple(tensor.shape) == (3, 16, 16)
