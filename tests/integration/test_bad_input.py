"""Every bad input ends its stage with exit 2 and one `error: ...` line naming the file and
the row, column or key; an earlier output of the stage survives.

The stages run in-process through `embedlab.stages.main`, the function behind
`pipeline/*.py`, in a temporary repo root holding a `params.yaml`.
"""

from __future__ import annotations

import math
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from PIL import Image

from embedlab.stages import main

MANIFEST = Path("data/prepared/manifest.csv")
TINY_MODEL = {
    "arch": "vit_tiny_patch16_224",
    "input_size": None,
    "timm_kwargs": {"img_size": 16, "patch_size": 8, "depth": 1, "embed_dim": 32, "num_heads": 2},
}


def _write_params(prepare: dict[str, Any] | None = None, **sections: Any) -> None:
    raw: dict[str, Any] = {
        "prepare": {"source": "csv", "root": "input/mine.csv", **(prepare or {})},
        "train": {
            "model": TINY_MODEL,
            "sampler": {"n_labels": 2, "n_instances": 2},
        },
        "tracking": {"loggers": ["csv"]},
    }
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value}
    Path("params.yaml").write_text(yaml.safe_dump(raw))


def _frame() -> pd.DataFrame:
    """4 train images of 2 labels, 4 validation images of 2 labels, all 16x16 PNGs."""
    return pd.DataFrame(
        {
            "label": [0, 0, 1, 1, 2, 2, 3, 3],
            "path": [f"imgs/{i}.png" for i in range(8)],
            "split": ["train"] * 4 + ["validation"] * 4,
        }
    )


def _write_csv(df: pd.DataFrame) -> None:
    df.to_csv("input/mine.csv", index=False)


def _stage(name: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(name)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err


def _fails(name: str, capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    """Run a stage that must fail; return its one error line after checking what it names."""
    rc, err = _stage(name, capsys)
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert rc == 2, err
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def repo(workdir: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """A repo root with a good CSV source already prepared once (the earlier output)."""
    for i in range(8):
        (workdir / "input" / "imgs").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 16), (10 * i, 80, 160)).save(workdir / "input" / "imgs" / f"{i}.png")
    _write_csv(_frame())
    _write_params()
    rc, err = _stage("prepare", capsys)
    assert rc == 0, err
    return workdir


@pytest.fixture
def earlier(repo: Path) -> bytes:
    return (repo / MANIFEST).read_bytes()


def _prepare_fails(capsys: pytest.CaptureFixture[str], earlier: bytes, *needles: str) -> str:
    line = _fails("prepare", capsys, *needles)
    assert MANIFEST.read_bytes() == earlier  # the earlier output is intact
    return line


# 1
def test_missing_required_column(earlier: bytes, capsys: pytest.CaptureFixture[str]) -> None:
    _write_csv(_frame().drop(columns="split"))
    _prepare_fails(capsys, earlier, "input/mine.csv: missing required column(s) split")


# 2
def test_unknown_split_value(earlier: bytes, capsys: pytest.CaptureFixture[str]) -> None:
    _write_csv(_frame().assign(split=["train"] * 4 + ["validation", "val", "validation", "test"]))
    _prepare_fails(
        capsys,
        earlier,
        "input/mine.csv: line 7, 9, column 'split': unknown value 'val'",
        "train, validation",
    )


# 3
@pytest.mark.parametrize(
    ("label", "shown"), [("x", "'x'"), ("", "an empty value"), ("1.5", "'1.5'")]
)
def test_non_integer_or_empty_label(
    label: str, shown: str, earlier: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    _write_csv(_frame().assign(label=["0", "0", "1", label, "2", "2", "3", "3"]))
    _prepare_fails(
        capsys, earlier, f"input/mine.csv: line 5, column 'label': expected an integer, got {shown}"
    )


# 4
def test_missing_images_are_all_listed(earlier: bytes, capsys: pytest.CaptureFixture[str]) -> None:
    for i in (1, 5, 6):
        Path(f"input/imgs/{i}.png").unlink()
    _prepare_fails(
        capsys,
        earlier,
        "input/mine.csv: 3 image file(s) missing under",
        "line 3: imgs/1.png, line 7: imgs/5.png, line 8: imgs/6.png",
    )


# 5
def test_unreadable_and_truncated_images(
    earlier: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    Path("input/imgs/2.png").write_text("this is not an image")
    data = Path("input/imgs/6.png").read_bytes()
    Path("input/imgs/6.png").write_bytes(data[: len(data) // 2])
    _prepare_fails(
        capsys,
        earlier,
        "input/mine.csv: 2 image file(s) unreadable or truncated:",
        "line 4: imgs/2.png (cannot decode",
        "line 8: imgs/6.png (cannot decode",
    )


def _with_boxes(*rows: tuple[Any, Any, Any, Any]) -> pd.DataFrame:
    df = _frame()
    boxes = list(rows) + [(0, 0, 16, 16)] * (len(df) - len(rows))
    for j, column in enumerate(("x_1", "y_1", "x_2", "y_2")):
        df[column] = [b[j] for b in boxes]
    return df


# 6
def test_partial_bbox(earlier: bytes, capsys: pytest.CaptureFixture[str]) -> None:
    _write_csv(_with_boxes((0, 0, 8, 8), (1, 1, None, None)))
    _prepare_fails(
        capsys, earlier, "input/mine.csv: line 3: partial bbox, column(s) x_2, y_2 empty"
    )


# 7
@pytest.mark.parametrize(
    ("box", "needle"),
    [
        (
            (0, 0, 20, 8),
            "1 bbox(es) outside their image: line 2: imgs/0.png is 16x16, bbox x_2=20 > 16",
        ),
        ((0, 2, 8, 17), "line 2: imgs/0.png is 16x16, bbox y_2=17 > 16"),
        ((8, 0, 8, 8), "line 2, columns x_1..y_2: bbox must have 0 <= x_1 < x_2"),
    ],
)
def test_bbox_outside_image_or_inverted(
    box: tuple[int, ...], needle: str, earlier: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    _write_csv(_with_boxes(box))
    _prepare_fails(
        capsys, earlier, "input/mine.csv: " if "outside" in needle else "input/mine.csv", needle
    )


# 8
def test_empty_train_split(earlier: bytes, capsys: pytest.CaptureFixture[str]) -> None:
    _write_csv(_frame().assign(split="validation"))
    _prepare_fails(capsys, earlier, "input/mine.csv: the train split is empty")


# 9
@pytest.mark.parametrize("column", ["is_query", "is_gallery"])
def test_validation_without_query_or_gallery(
    column: str, earlier: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    _write_csv(_frame().assign(**{column: ["false"] * 8}))
    role = "query" if column == "is_query" else "gallery"
    _prepare_fails(
        capsys, earlier, f"input/mine.csv: the validation split has no {role}", f"{column} false"
    )


# 10
def test_queries_without_gallery_match_warn_with_a_count(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    df = _frame().assign(label=[0, 0, 1, 1, 2, 2, 3, 4])  # labels 3 and 4: one image each
    _write_csv(df)
    with pytest.warns(
        UserWarning, match=r"input/mine.csv: 2 of 4 validation queries have no gallery item"
    ):
        rc, err = _stage("prepare", capsys)
    assert rc == 0, err
    assert pd.read_csv(MANIFEST)["label"].tolist()[-1] == 4
    # every query like that: an error
    _write_csv(_frame().assign(label=[0, 0, 1, 1, 2, 3, 4, 5]))
    _prepare_fails(
        capsys,
        MANIFEST.read_bytes(),
        "input/mine.csv: none of the 4 validation queries has a gallery item",
    )


# 11
def test_train_label_with_a_single_image(
    earlier: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    _write_csv(_frame().assign(label=[0, 0, 1, 7, 2, 2, 3, 3]))
    _prepare_fails(
        capsys, earlier, "input/mine.csv: column 'label': train label(s) 1, 7 have a single image"
    )


# 12
@pytest.mark.slow  # the train stage imports Lightning and timm: seconds, once per session
@pytest.mark.parametrize(
    ("sampler", "needle"),
    [
        ({"n_labels": 5, "n_instances": 2}, "train.sampler.n_labels=5 is more than the 2 distinct"),
        # a batch of a million images would be allocated first (90 GB at 176 px)
        (
            {"n_labels": 2, "n_instances": 100_000},
            "train.sampler.n_instances=100000 is more than the 2 items of the largest label",
        ),
    ],
)
def test_batches_the_train_split_cannot_fill(
    sampler: dict[str, int], needle: str, repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (repo / "models").mkdir()
    (repo / "models" / "extractor.json").write_text("{}")  # an earlier output of train
    _write_params(train={"model": TINY_MODEL, "sampler": sampler})
    _fails("train", capsys, needle)
    assert (repo / "models" / "extractor.json").read_text() == "{}"


# 13
def test_unknown_key_suggests_the_known_one(
    earlier: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    _write_params(prepare={"val_fractoin": 0.3})
    _prepare_fails(
        capsys,
        earlier,
        "params.yaml: unknown key 'prepare.val_fractoin' (did you mean 'prepare.val_fraction'?)",
    )


# 14
@pytest.mark.parametrize(
    ("section", "value", "needle"),
    [
        (
            "prepare",
            {"val_fraction": 1.5},
            "params.yaml: prepare.val_fraction: Input should be less than 1",
        ),
        (
            "train",
            {"max_epochs": "two"},
            "params.yaml: train.max_epochs: Input should be a valid integer",
        ),
        ("prepare", {"image_check": "full"}, "params.yaml: prepare.image_check: Input should be"),
        (
            "train",
            {"model": {**TINY_MODEL, "input_size": -3}},
            "params.yaml: train.model.input_size: every side must be in [1, 4096], got -3",
        ),
        (
            "train",
            {"trainer": {"accelerator": "cpus"}},
            "train.trainer.accelerator: Lightning knows no accelerator 'cpus' (did you mean",
        ),
        (
            "train",
            {"trainer": {"strategy": "dpp"}},
            "train.trainer.strategy: Lightning knows no strategy 'dpp' (did you mean 'ddp'?)",
        ),
        (
            "train",
            {"trainer": {"precision": "8-bit"}},
            "train.trainer.precision: Lightning knows no",
        ),
        ("train", {"trainer": {"devices": 0}}, "train.trainer.devices: expected a count >= 1"),
    ],
)
def test_wrong_type_or_out_of_range_value(
    section: str,
    value: dict[str, Any],
    needle: str,
    earlier: bytes,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if section == "prepare":
        _write_params(prepare=value)
    else:
        _write_params(**{section: value})
    _prepare_fails(capsys, earlier, needle)


# 15
@pytest.mark.parametrize(
    ("source", "make", "needle"),
    [
        (
            "cub",
            ["images.txt", "classes.txt", "images/"],
            "cub/image_class_labels.txt: missing; expected CUB-200-2011",
        ),
        (
            "cub",
            ["README"],
            "cub/images.txt: missing; prepare.root does not look like CUB-200-2011",
        ),
        (
            "sop",
            ["Ebay_train.txt"],
            "sop/Ebay_test.txt: missing; expected Stanford Online Products",
        ),
        ("inshop", [], "inshop/list_eval_partition.txt: missing"),
        ("cars", [], "cars/cars_annos.mat: missing; prepare.root does not look like Cars196"),
        ("imagefolder", None, "imagefolder: not found (prepare.root for the 'imagefolder' source)"),
    ],
)
def test_root_missing_or_not_in_the_native_format(
    source: str,
    make: list[str] | None,
    needle: str,
    earlier: bytes,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if make is not None:
        Path(source).mkdir()
        for name in make:
            if name.endswith("/"):
                Path(source, name).mkdir()
            else:
                Path(source, name).write_text(
                    "image_id class_id super_class_id path\n1 1 1 a.jpg\n"
                )
    _write_params(prepare={"source": source, "root": source})
    _prepare_fails(capsys, earlier, needle)


def test_root_not_set(earlier: bytes, capsys: pytest.CaptureFixture[str]) -> None:
    _write_params(prepare={"source": "sop", "root": None})
    _prepare_fails(capsys, earlier, "params.yaml: prepare.root: the 'sop' source needs")


# 16
@pytest.mark.slow  # see case 12
@pytest.mark.parametrize("problem", ["missing", "unreadable", "other architecture"])
def test_bad_weights_file(problem: str, repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    weights = repo / "w.safetensors"
    if problem == "unreadable":
        weights.write_bytes(b"\x00\x01 definitely not safetensors")
    elif problem == "other architecture":
        from safetensors.torch import save_file

        from embedlab.models import TimmExtractor

        other = TimmExtractor(
            "vit_tiny_patch16_224", **{**TINY_MODEL["timm_kwargs"], "embed_dim": 48}
        )
        save_file(other.model.state_dict(), str(weights))
    _write_params(train={"model": {**TINY_MODEL, "weights": str(weights)}})
    needle = {
        "missing": "w.safetensors: weights file not found",
        "unreadable": "w.safetensors: cannot read weights",
        "other architecture": "w.safetensors: weights do not fit arch 'vit_tiny_patch16_224'",
    }[problem]
    _fails("train", capsys, needle)
    assert not (repo / "models" / "extractor.safetensors").exists()


# 17
@pytest.mark.parametrize("twin", ["imgs/0.png", "./imgs/0.png", "imgs//0.png"])
def test_duplicate_paths(twin: str, earlier: bytes, capsys: pytest.CaptureFixture[str]) -> None:
    _write_csv(
        _frame().assign(
            path=["imgs/0.png", "imgs/1.png", twin] + [f"imgs/{i}.png" for i in range(3, 8)]
        )
    )
    _prepare_fails(
        capsys, earlier, f"input/mine.csv: line 4, column 'path': duplicate path '{twin}'"
    )


# 18
def test_path_escaping_dataset_root(earlier: bytes, capsys: pytest.CaptureFixture[str]) -> None:
    Image.new("RGB", (16, 16)).save("outside.png")
    _write_csv(
        _frame().assign(
            path=["imgs/0.png", "imgs/../../outside.png"] + [f"imgs/{i}.png" for i in range(2, 8)]
        )
    )
    _prepare_fails(
        capsys,
        earlier,
        "input/mine.csv: line 3, column 'path': 'imgs/../../outside.png' escapes dataset_root",
    )


# 19
@pytest.mark.slow
def test_diverging_training_stops_in_one_line_and_keeps_earlier_outputs(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write_params(train={"max_epochs": 1, "val_every_n_epochs": 1})
    rc, err = _stage("train", capsys)
    assert rc == 0, err
    earlier = {
        path: path.read_bytes()
        for path in (Path("reports/train.json"), Path("models/extractor.safetensors"))
    }
    _write_params(
        train={"max_epochs": 3, "val_every_n_epochs": 1, "optimizer": {"lr": 1e6}},
    )
    _fails("train", capsys, "training diverged at step", "lower train.optimizer.lr (now 1e+06)")
    for path, content in earlier.items():
        assert path.read_bytes() == content, path
    for log in Path("logs/csv").rglob("*.csv"):  # nothing NaN reached the tracker
        values = pd.to_numeric(pd.read_csv(log)["value"], errors="coerce").dropna()
        assert values.map(math.isfinite).all(), log


# 20
def test_every_kind_of_problem_is_reported_at_once(
    earlier: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    Path("input/imgs/7.png").unlink()
    frame = _frame()
    frame["label"] = ["0", "0", "1", "x", "2", "2", "3", "3"]
    frame["split"] = ["train"] * 4 + ["validation", "val", "validation", "validation"]
    _write_csv(frame)
    line = _prepare_fails(capsys, earlier, "input/mine.csv: 3 kinds of problems")
    assert "[1 row] line 5, column 'label': expected an integer, got 'x'" in line
    assert "[1 row] line 7, column 'split': unknown value 'val'" in line
    assert "[1 row] 1 image file(s) missing under" in line and "line 9: imgs/7.png" in line


# 21
@pytest.fixture
def small_disk(repo: Path) -> Iterator[Path]:
    """A 300 KiB tmpfs (root only); skipped where mounting is not allowed."""
    mount = repo / "small-disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.slow
def test_a_full_disk_stops_validate_in_one_line_and_keeps_earlier_reports(
    small_disk: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write_params(train={"max_epochs": 1})
    assert _stage("train", capsys)[0] == 0
    # The reports move onto the small disk, then a filler leaves it no room for the images.
    shutil.copytree("reports", small_disk / "reports")
    shutil.rmtree("reports")
    Path("reports").symlink_to(small_disk / "reports")
    earlier = {p: p.read_bytes() for p in Path("reports").rglob("*") if p.is_file()}
    free = shutil.disk_usage(small_disk).free
    (small_disk / "filler").write_bytes(b"\0" * max(0, free - 8192))
    line = _fails("validate", capsys, "cannot write", "No space left on device")
    assert "the earlier file is kept" in line
    for path, content in earlier.items():
        assert path.read_bytes() == content, path
    assert not [p for p in Path("reports").rglob("*.tmp")]  # no half-written file left
