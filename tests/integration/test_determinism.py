"""Two runs from scratch with the same params give identical reports; another seed does not."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from embedlab.config import Params
from embedlab.data.samplers import BalanceSampler
from embedlab.io import read_json
from embedlab.stages.common import METRICS_REPORT, MODELS_DIR, TRAIN_REPORT
from embedlab.stages.prepare import run_prepare
from embedlab.stages.train import run_train
from embedlab.stages.validate import run_validate
from tests.conftest import fast_params

pytestmark = pytest.mark.slow


def params(seed: int = 0) -> Params:
    # two short epochs: the second exercises the per-epoch reseed and sampler epoch
    return fast_params(
        seed=seed, train__max_epochs=2, train__sampler={"n_labels": 5, "n_instances": 16}
    )


def train_and_validate(p: Params, root: Path) -> tuple[str, dict, bytes, str]:
    train = run_train(p, root)
    run_validate(p, root)
    weights = (root / MODELS_DIR / "extractor.safetensors").read_bytes()
    curve = (root / "reports" / "plots" / "validation.json").read_text()
    return (root / METRICS_REPORT).read_text(), train, weights, curve


def test_same_params_same_reports_other_seed_other_numbers(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_prepare(params(), workdir)
    epochs_set: list[int] = []
    set_epoch = BalanceSampler.set_epoch

    def spy(self: BalanceSampler, epoch: int) -> None:
        epochs_set.append(epoch)
        set_epoch(self, epoch)

    monkeypatch.setattr(BalanceSampler, "set_epoch", spy)
    first = train_and_validate(params(), workdir)
    assert epochs_set == [0, 1]  # Lightning alone would never call it on a batch sampler
    # The same workspace again: the finished run's checkpoint must not be "resumed".
    second = train_and_validate(params(), workdir)
    assert read_json(workdir / TRAIN_REPORT)["resumed_from_epoch"] == 0
    assert second[0] == first[0]
    assert second[2] == first[2]
    for key in ("global_step", "final_loss"):
        assert second[1][key] == first[1][key], key
    assert second[3] == first[3]  # the validation curve

    other = workdir / "other"
    other.mkdir()
    shutil.copytree(workdir / "data", other / "data")
    reseeded = train_and_validate(params(seed=1), other)
    assert reseeded[2] != first[2]
    assert reseeded[1]["final_loss"] != first[1]["final_loss"]
    assert reseeded[0] != first[0]
