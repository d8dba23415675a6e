"""dvc.yaml declares every param each stage reads, found by running the stages.

Each stage runs in-process on a tiny repo (8 images, a 1-block ViT) while every read of a
``params.yaml`` key is recorded; each key read must fall under one of the stage's
``params:`` in dvc.yaml, or ``dvc repro`` would not rerun the stage when it changes.
The run uses the repo's params.yaml (its trackers included) but for the data and the model,
so it sees the reads of a default run; other branches (a loss, a source) read keys of the
same sections.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image
from pydantic import BaseModel

from embedlab import config
from embedlab.stages import STAGES, main
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow

DECLARED = {
    name: stage.get("params", [])
    for name, stage in yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"].items()
}
TINY = {
    "arch": "vit_tiny_patch16_224",
    "input_size": None,
    "timm_kwargs": {"img_size": 16, "patch_size": 8, "depth": 1, "embed_dim": 16, "num_heads": 2},
}


def _section_paths(model: type[BaseModel], prefix: str = "") -> dict[type, str]:
    """Each section class of :class:`Params` and where it sits (``train.trainer.``)."""
    paths = {model: prefix}
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            paths.update(_section_paths(annotation, f"{prefix}{name}."))
    return paths


SECTIONS = _section_paths(config.Params)
REAL_LOAD = config.load_params


class KeyRecorder:
    """Records ``params.yaml`` keys read as attributes of any section object, from the
    moment params.yaml is loaded (its validators read keys of every stage)."""

    def __init__(self) -> None:
        self.read: set[str] = set()
        self.active = False

    def load_params(self, path: Any) -> config.Params:
        params = REAL_LOAD(path)
        self.active = True
        return params

    def getattribute(self, section: Any, name: str) -> Any:
        value = object.__getattribute__(section, name)
        prefix = SECTIONS.get(type(section))
        if self.active and prefix is not None and name in type(section).model_fields:
            self.read.add(prefix + name)
        return value

    def hook(self) -> Any:
        """A plain function for ``__getattribute__`` (Python binds it as a method)."""

        def getattribute(section: Any, name: str) -> Any:
            return self.getattribute(section, name)

        return getattribute

    def keys(self) -> set[str]:
        """The settings read; a section counts only when none of its keys was read
        (it was used whole: ``LossParams.arguments`` dumps the chosen loss's section)."""
        return {k for k in self.read if not any(o.startswith(k + ".") for o in self.read)}


def _covered(key: str, declared: list[str]) -> bool:
    return any(key == d or key.startswith(d + ".") for d in declared)


def _tiny_repo(root: Path) -> None:
    (root / "input" / "imgs").mkdir(parents=True)
    rows = ["label,path,split"]
    for i in range(8):
        Image.new("RGB", (16, 16), (20 * i, 60, 90)).save(root / "input" / "imgs" / f"{i}.png")
        rows.append(f"{i // 2},imgs/{i}.png,{'train' if i < 4 else 'validation'}")
    (root / "input" / "mine.csv").write_text("\n".join(rows) + "\n")
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["prepare"].update(source="csv", root="input/mine.csv")
    params["train"]["model"].update(TINY)
    params["train"]["sampler"].update(n_labels=2, n_instances=2)
    params["train"].update(max_epochs=1, val_every_n_epochs=1)
    (root / "params.yaml").write_text(yaml.safe_dump(params))


@pytest.fixture(scope="module")
def reads(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, set[str]]]:
    """The keys each stage read, running prepare, train, validate and embed in turn."""
    root = tmp_path_factory.mktemp("stage-params")
    _tiny_repo(root)
    found: dict[str, set[str]] = {}
    old = os.getcwd()
    os.chdir(root)
    try:
        for stage in STAGES:
            recorder = KeyRecorder()
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(config, "load_params", recorder.load_params)
                patch.setattr(config._Section, "__getattribute__", recorder.hook())
                assert main(stage) == 0, stage
            found[stage] = recorder.keys()
    finally:
        os.chdir(old)
    yield found


@pytest.mark.parametrize("stage", list(STAGES))
def test_dvc_yaml_declares_every_param_the_stage_reads(
    reads: dict[str, set[str]], stage: str
) -> None:
    undeclared = sorted(k for k in reads[stage] if not _covered(k, DECLARED[stage]))
    assert undeclared == [], f"add them to dvc.yaml's {stage} params"


def test_the_recorder_sees_the_reads_a_user_relies_on(reads: dict[str, set[str]]) -> None:
    # Seen at all: the test above would pass vacuously with a recorder that records nothing.
    # (prepare reads `seed` only when prepare.split_seed is null; params.yaml fixes it at 0)
    assert {"prepare.source", "prepare.max_image_pixels", "prepare.split_seed"} <= reads["prepare"]
    assert {"train.max_epochs", "train.optimizer.lr", "train.sampler.n_labels"} <= reads["train"]
    assert {"validate.batch_size", "train.trainer.accelerator"} <= reads["validate"]
    assert {"embed.batch_size", "embed.index"} <= reads["embed"]
