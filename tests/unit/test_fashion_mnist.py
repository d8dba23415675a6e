"""The ``fashion_mnist`` source on tiny IDX files written here (no real data needed)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from embedlab.config import PrepareParams, parse_params
from embedlab.data.manifest import load_manifest, validate_manifest
from embedlab.data.sources import fashion_mnist
from embedlab.data.sources._native import SourceError
from embedlab.data.sources.fashion_mnist import find_files, prepare_fashion_mnist, read_idx
from embedlab.stages.prepare import run_prepare


def _write_idx(path: Path, array: np.ndarray, gz: bool = True) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    data = header + array.astype(np.uint8).tobytes()
    if gz:
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def _split(n_per_class: int, classes: int, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """Images whose pixel (0, 0) encodes the image's index (+offset), so files can be traced."""
    labels = np.tile(np.arange(classes), n_per_class)
    images = np.zeros((len(labels), 28, 28), dtype=np.uint8)
    images[:, 0, 0] = (np.arange(len(labels)) + offset) % 256
    images[:, 5:20, 5:20] = (labels * 20)[:, None, None]
    return images, labels


def _write_fashion(folder: Path, classes: int = 4, train: int = 6, test: int = 5, gz=True):
    folder.mkdir(parents=True, exist_ok=True)
    data = {"train": _split(train, classes, 0), "test": _split(test, classes, 100)}
    for split, (images_name, labels_name) in fashion_mnist.FILES.items():
        images, labels = data[split]
        _write_idx(folder / images_name, images, gz)
        _write_idx(folder / labels_name, labels, gz)
    return data


@pytest.fixture
def nowhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the Debian and torchvision locations at empty folders (the machine may have them)."""
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "debian")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path


def _cfg(root: Path, **fm: object) -> PrepareParams:
    return PrepareParams(source="fashion_mnist", root=str(root), split_seed=0, fashion_mnist=fm)


def test_read_idx_round_trips_gzipped_and_plain(tmp_path: Path) -> None:
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "a-idx3-ubyte", array)
    _write_idx(tmp_path / "b-idx3-ubyte", array, gz=False)
    assert np.array_equal(read_idx(tmp_path / "a-idx3-ubyte.gz"), array)
    assert np.array_equal(read_idx(tmp_path / "b-idx3-ubyte"), array)


def test_read_idx_names_the_file_of_a_bad_magic_or_truncated_data(tmp_path: Path) -> None:
    bad = tmp_path / "bad-idx1-ubyte"
    bad.write_bytes(b"PK\x03\x04rest")
    with pytest.raises(SourceError, match=r"bad-idx1-ubyte: not an IDX file"):
        read_idx(bad)
    short = tmp_path / "short-idx1-ubyte"
    short.write_bytes(struct.pack(">BBBBI", 0, 0, 8, 1, 5) + b"\x01\x02")
    with pytest.raises(SourceError, match=r"short-idx1-ubyte: IDX data has 2 bytes, .* says 5"):
        read_idx(short)


def test_closed_protocol_train_split_trains_test_split_validates(tmp_path: Path, nowhere) -> None:
    data = _write_fashion(tmp_path / "fm", classes=4, train=6, test=5)
    out = tmp_path / "out"
    prepared = prepare_fashion_mnist(_cfg(tmp_path / "fm", train_per_class=4, val_per_class=3), out)
    df = validate_manifest(prepared.df, prepared.dataset_root, name="fashion_mnist manifest")
    train, val = df[df["split"] == "train"], df[df["split"] == "validation"]
    assert train["label"].value_counts().to_dict() == {0: 4, 1: 4, 2: 4, 3: 4}
    assert val["label"].value_counts().to_dict() == {0: 3, 1: 3, 2: 3, 3: 3}
    assert val["is_query"].all() and val["is_gallery"].all()
    assert not train["is_query"].any() and not train["is_gallery"].any()
    assert set(val["class_name"]) == {"T-shirt/top", "Trouser", "Pullover", "Dress"}
    # every written PNG is the very image of its IDX file (traced by pixel (0, 0)), 28x28 grey
    for split, rows in (("train", train), ("test", val)):
        images, labels = data[split]
        for rel, label in zip(rows["path"], rows["label"], strict=True):
            assert rel.startswith(f"images/{split}/{label}/")
            index = int(Path(rel).stem)
            with Image.open(out / rel) as image:
                assert image.mode == "L" and image.size == (28, 28)
                assert np.array_equal(np.asarray(image), images[index])
            assert labels[index] == label


def test_subsets_are_seeded(tmp_path: Path, nowhere) -> None:
    _write_fashion(tmp_path / "fm", classes=3, train=10, test=10)
    cfg = _cfg(tmp_path / "fm", train_per_class=3, val_per_class=2)
    first = prepare_fashion_mnist(cfg, tmp_path / "a").df
    again = prepare_fashion_mnist(cfg, tmp_path / "b").df
    other = prepare_fashion_mnist(cfg.model_copy(update={"split_seed": 5}), tmp_path / "c").df
    assert first["path"].tolist() == again["path"].tolist()
    assert first["path"].tolist() != other["path"].tolist()
    everything = prepare_fashion_mnist(
        _cfg(tmp_path / "fm", train_per_class=None, val_per_class=None), tmp_path / "d"
    ).df
    assert (everything["split"] == "train").sum() == 30
    assert (everything["split"] == "validation").sum() == 30


def test_open_protocol_holds_the_chosen_classes_out(tmp_path: Path, nowhere) -> None:
    _write_fashion(tmp_path / "fm", classes=4, train=6, test=5)
    cfg = _cfg(tmp_path / "fm", protocol="open", open_val_classes=[1, 3], val_per_class=None)
    prepared = prepare_fashion_mnist(cfg, tmp_path / "out")
    df = prepared.df
    assert set(df.loc[df["split"] == "train", "label"]) == {0, 2}
    assert set(df.loc[df["split"] == "validation", "label"]) == {1, 3}
    assert (df["split"] == "validation").sum() == 10  # all test images of classes 1 and 3
    assert df.loc[df["split"] == "validation", "path"].str.startswith("images/test/").all()
    assert prepared.info["validation_classes"] == [1, 3]
    with pytest.raises(SourceError, match=r"open_val_classes: \[7\] are not labels"):
        prepare_fashion_mnist(
            _cfg(tmp_path / "fm", protocol="open", open_val_classes=[7]), tmp_path / "bad"
        )


def test_rerank_split_holds_train_file_images_the_train_split_does_not(
    tmp_path: Path, nowhere
) -> None:
    data = _write_fashion(tmp_path / "fm", classes=4, train=10, test=5)
    cfg = _cfg(tmp_path / "fm", protocol="open", open_val_classes=[3], train_per_class=4)
    without = prepare_fashion_mnist(cfg, tmp_path / "a").df
    df = prepare_fashion_mnist(
        cfg.model_copy(
            update={"fashion_mnist": cfg.fashion_mnist.model_copy(update={"rerank_per_class": 5})}
        ),
        tmp_path / "b",
    ).df
    df = validate_manifest(df, tmp_path / "b", name="fashion_mnist manifest")
    rerank, train = df[df["split"] == "rerank"], df[df["split"] == "train"]
    # training classes only, 5 of each, none of them a train image; all from the train file
    assert rerank["label"].value_counts().to_dict() == {0: 5, 1: 5, 2: 5}
    assert not set(rerank["path"].str.split("/").str[-1]) & set(
        train["path"].str.split("/").str[-1]
    )
    for rel, label in zip(rerank["path"], rerank["label"], strict=True):
        index = int(Path(rel).stem)
        assert data["train"][1][index] == label and rel.startswith(f"images/rerank/{label}/")
    assert not rerank["is_query"].any() and not rerank["is_gallery"].any()
    # appended: the train and validation rows (and so validation row ids) do not move
    n = len(without)
    assert (df["split"].iloc[n:] == "rerank").all()
    assert df.iloc[:n][["path", "split"]].equals(without[["path", "split"]])
    with pytest.raises(
        SourceError, match=r"rerank_per_class: 7 is more than .* label\(s\) \[0, 1, 2\]"
    ):
        prepare_fashion_mnist(
            cfg.model_copy(
                update={
                    "fashion_mnist": cfg.fashion_mnist.model_copy(update={"rerank_per_class": 7})
                }
            ),
            tmp_path / "c",
        )


def test_files_are_found_in_order_root_debian_then_torchvision(tmp_path: Path, nowhere) -> None:
    debian, cache = tmp_path / "debian", tmp_path / "cache" / "embedlab" / "FashionMNIST" / "raw"
    _write_fashion(cache, gz=False)  # torchvision keeps the extracted files too
    assert find_files(None)["train"][0] == cache / "train-images-idx3-ubyte"
    _write_fashion(debian)
    assert find_files(None)["train"][0] == debian / "train-images-idx3-ubyte.gz"
    torchvision_root = tmp_path / "mine"
    _write_fashion(torchvision_root / "FashionMNIST" / "raw")
    assert find_files(torchvision_root)["test"][1].parent == torchvision_root / "FashionMNIST/raw"


def test_missing_files_are_one_line_that_says_where_and_how(tmp_path: Path, nowhere) -> None:
    folder = tmp_path / "partial"
    _write_fashion(folder)
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(SourceError) as caught:
        prepare_fashion_mnist(_cfg(folder), tmp_path / "out")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("Fashion-MNIST IDX files not found (looked in ")
    for place in (str(folder), str(tmp_path / "debian"), "FashionMNIST/raw"):
        assert place in message
    assert "apt-get install dataset-fashion-mnist" in message


def test_prepare_stage_writes_a_valid_manifest(workdir: Path, nowhere) -> None:
    _write_fashion(workdir / "fm", classes=3, train=4, test=4)
    params = parse_params(
        {
            "prepare": {
                "source": "fashion_mnist",
                "root": "fm",
                "fashion_mnist": {"train_per_class": 2, "val_per_class": 2},
            }
        }
    )
    manifest = load_manifest(run_prepare(params, workdir))
    assert len(manifest.split("train")) == 6 and len(manifest.split("validation")) == 6


@pytest.mark.slow
def test_setup_script_finds_files_in_prepare_root_and_installs_nothing(
    tmp_path: Path, nowhere
) -> None:
    import os
    import shutil
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    repo = tmp_path / "repo"
    (repo / "pipeline").mkdir(parents=True)
    shutil.copy2(REPO_ROOT / "pipeline" / "ensure_fashion_mnist.sh", repo / "pipeline")
    _write_fashion(repo / "fm")
    (repo / "params.yaml").write_text("prepare:\n  source: fashion_mnist\n  root: fm\n")
    # apt-get and sudo that fail loudly: the script must not need them when files exist
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("apt-get", "sudo"):
        (bin_dir / tool).write_text("#!/bin/sh\necho called >&2\nexit 99\n")
        (bin_dir / tool).chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "PYTHON": sys.executable,
        "PYTHONPATH": str(REPO_ROOT / "src"),
    }
    result = subprocess.run(
        ["bash", "pipeline/ensure_fashion_mnist.sh"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Fashion-MNIST: found in fm"
    assert "called" not in result.stderr
