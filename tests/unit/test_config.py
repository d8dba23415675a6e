from pathlib import Path

import pytest

from embedlab.config import Params, ParamsError, load_params, parse_params
from tests.conftest import REPO_ROOT


def test_repo_params_yaml_is_valid() -> None:
    params = load_params(REPO_ROOT / "params.yaml")
    assert params.prepare.source == "fashion_mnist"
    assert params.train.model.input_size == 28
    assert params.tracking.loggers == ["tensorboard"]
    assert "${" not in (REPO_ROOT / "params.yaml").read_text()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            {"train": {"max_epoch": 1}},
            "unknown key 'train.max_epoch' (did you mean 'train.max_epochs'?)",
        ),
        ({"trian": {}}, "unknown key 'trian' (did you mean 'train'?)"),
        ({"train": {"sampler": {"n_label": 2}}}, "did you mean 'train.sampler.n_labels'?"),
        ({"train": {"max_epochs": "ten"}}, "train.max_epochs: Input should be a valid integer"),
        (
            {"train": {"max_epochs": 0}},
            "train.max_epochs: Input should be greater than or equal to 1",
        ),
        ({"validate": {"cmc_top_k": [0, 5]}}, "validate.cmc_top_k: every k must be >= 1"),
        ({"tracking": {"loggers": ["tensorbord"]}}, "tracking.loggers"),
        ({"prepare": {"source": "imagenet"}}, "prepare.source"),
    ],
)
def test_bad_params_name_the_key(raw: dict, expected: str) -> None:
    with pytest.raises(ParamsError) as info:
        parse_params(raw)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def test_unknown_key_without_close_match_lists_known_keys() -> None:
    with pytest.raises(ParamsError, match=r"known keys: .*max_epochs"):
        parse_params({"train": {"zzz": 1}})


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  max_epochs: [1\n")
    with pytest.raises(ParamsError, match=r"params.yaml: line \d+ not valid YAML"):
        load_params(path)


def test_flat_params_and_hash_change_with_values() -> None:
    a, b = Params(), parse_params({"seed": 1})
    assert a.flat()["train.sampler.n_labels"] == 5
    assert a.flat()["validate.cmc_top_k"] == "[1, 5]"
    assert a.short_hash() != b.short_hash()
    assert a.short_hash() == Params().short_hash()
