"""Every image mode PIL opens is read right or refused clearly; huge images are refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from embedlab.data.datasets import ImageReadError, load_image
from embedlab.data.image_checks import DEFAULT_PIXEL_LIMIT, set_pixel_limit
from embedlab.data.manifest import ManifestError, check_files

GRADIENT = np.linspace(0.0, 1.0, 64).reshape(8, 8)  # the true image, in [0, 1]


def _save(tmp_path: Path, mode: str) -> tuple[Path, float]:
    """A file of ``mode`` holding GRADIENT (or its nearest); returns it and its true mean/255."""
    if mode == "I;16":
        image = Image.fromarray((GRADIENT * 65535).round().astype(np.uint16))
    elif mode == "I":
        image = Image.fromarray((GRADIENT * 65535).round().astype(np.int32), mode="I")
    elif mode == "F":
        image = Image.fromarray(GRADIENT.astype(np.float32), mode="F")
    else:
        image = Image.fromarray((GRADIENT * 255).round().astype(np.uint8), mode="L").convert(mode)
    fmt = {"CMYK": "JPEG", "F": "TIFF", "I": "TIFF"}.get(mode, "PNG")
    path = tmp_path / f"x.{fmt.lower()}"
    image.save(path, format=fmt, **({"quality": 100} if fmt == "JPEG" else {}))
    with Image.open(path) as reopened:
        assert reopened.mode == mode, f"{mode} saved as {reopened.mode}"
    return path, float(GRADIENT.mean())


@pytest.mark.parametrize("mode", ["1", "L", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F"])
def test_every_mode_decodes_to_rgb_with_the_right_brightness(tmp_path: Path, mode: str) -> None:
    path, true_mean = _save(tmp_path, mode)
    image = load_image(str(path))
    assert image.mode == "RGB" and image.size == (8, 8)
    mean = np.asarray(image, dtype=np.float64).mean() / 255
    # "1" is thresholded by PIL (half the pixels white); the others keep the gradient.
    assert mean == pytest.approx(true_mean, abs=0.06 if mode in ("1", "CMYK") else 0.01), mode


def test_a_16_bit_greyscale_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    array = np.full((4, 4), 32896, dtype=np.uint16)  # 126.7 / 255 of full scale... x257
    Image.fromarray(array).save(tmp_path / "deep.png")
    assert np.asarray(load_image(str(tmp_path / "deep.png")))[0, 0].tolist() == [128] * 3


def test_unicode_names_load(tmp_path: Path) -> None:
    folder = tmp_path / "사진 é"
    folder.mkdir()
    Image.new("RGB", (3, 3), (1, 2, 3)).save(folder / "고양이.png")
    assert load_image(str(folder / "고양이.png")).getpixel((0, 0)) == (1, 2, 3)


@pytest.fixture
def small_limit():
    set_pixel_limit(10_000)
    yield
    set_pixel_limit(DEFAULT_PIXEL_LIMIT)


def test_an_image_over_the_pixel_limit_is_refused_at_the_header_check(
    tmp_path: Path, small_limit: None
) -> None:
    Image.new("L", (200, 100)).save(tmp_path / "big.png")  # 20,000 pixels, a tiny file
    Image.new("L", (10, 10)).save(tmp_path / "ok.png")
    with pytest.raises(ManifestError) as caught:
        check_files(["ok.png", "big.png"], tmp_path, "m.csv")
    message = str(caught.value)
    assert message.startswith("m.csv: 1 image(s) over the limit of 10000 pixels")
    assert "prepare.max_image_pixels" in message and "line 3: big.png is 200x100" in message
    assert "\n" not in message


def test_an_image_over_the_pixel_limit_is_refused_at_decoding(
    tmp_path: Path, small_limit: None
) -> None:
    Image.new("L", (120, 100)).save(tmp_path / "big.png")  # between 1x and 2x the limit
    with pytest.raises(ImageReadError, match=r"big.png: .*prepare.max_image_pixels"):
        load_image(str(tmp_path / "big.png"))


def test_the_decompression_bomb_of_the_issue_is_caught_at_prepare(tmp_path: Path) -> None:
    # 20000 x 20000 = 400M pixels of one colour: a ~50 KB PNG that decodes to 1.2 GB.
    Image.new("1", (20000, 20000)).save(tmp_path / "bomb.png", optimize=True)
    assert (tmp_path / "bomb.png").stat().st_size < 200_000
    with pytest.raises(ManifestError, match=r"bomb.png is 20000x20000"):
        check_files(["bomb.png"], tmp_path, "m.csv")


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16"])
def test_the_fast_decoder_gives_pils_pixels_or_steps_aside(tmp_path: Path, mode: str) -> None:
    from torchvision.transforms.functional import pil_to_tensor

    from embedlab.data.datasets import decode_uint8

    rng = np.random.default_rng(0)
    base = Image.fromarray(rng.integers(0, 255, (9, 7, 3), dtype=np.uint8), "RGB")
    if mode == "I;16":
        image = Image.fromarray(np.asarray(base.convert("L")).astype(np.uint16) * 257)
    else:
        image = base.convert(mode)
    path = tmp_path / ("x.jpg" if mode == "CMYK" else "x.png")
    image.save(path)
    fast = decode_uint8(str(path))
    if mode == "I;16":
        assert fast is None  # deep images take the scaling PIL path
        return
    assert torch.equal(fast, pil_to_tensor(load_image(str(path))))


def test_inference_items_are_the_same_through_either_decoder(tmp_path: Path) -> None:
    from embedlab.data.datasets import DatasetWithLabels, InferenceImages
    from embedlab.data.transforms import eval_transform

    rng = np.random.default_rng(1)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8), "L").save(
            tmp_path / f"{i}.png"
        )
    df = pd.DataFrame({"label": [0, 1, 2], "path": [f"{i}.png" for i in range(3)]})
    pre = {"input_size": [3, 8, 8], "mean": [0.5] * 3, "std": [0.25] * 3}
    view = InferenceImages(DatasetWithLabels(df, tmp_path, eval_transform(pre)))
    reference = InferenceImages(DatasetWithLabels(df, tmp_path, eval_transform(pre)))
    assert view._native_size == (8, 8)  # the fast path is taken
    reference._native_size = None  # force the PIL path
    for i in range(3):
        assert torch.equal(view[i]["input_tensors"], reference[i]["input_tensors"])
