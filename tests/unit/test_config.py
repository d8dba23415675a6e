from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from embedlab.config import (
    ACCELERATORS,
    PRECISIONS,
    STRATEGIES,
    Params,
    ParamsError,
    load_params,
    parse_params,
)
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
        ({"validate": {"ndcg_top_k": [5, 0]}}, "validate.ndcg_top_k: every k must be >= 1"),
        ({"validate": {"full_ranking": True}}, "did you mean 'validate.full_ranking_metrics'?"),
        ({"tracking": {"loggers": ["tensorbord"]}}, "tracking.loggers"),
        ({"prepare": {"source": "imagenet"}}, "prepare.source"),
        ({"seed": -1}, "seed: Input should be greater than or equal to 0"),
        ({"seed": 2**32}, "seed: Input should be less than or equal to 4294967295"),
        ({"train": {"model": {"input_size": 0}}}, "train.model.input_size: every side must be"),
        ({"train": {"model": {"input_size": [28]}}}, "expected a side or [height, width]"),
        (
            {"train": {"trainer": {"accelerator": "gpus"}}},
            "accelerator: Lightning knows no accelerator 'gpus' (did you mean 'gpu'?)",
        ),
        ({"train": {"trainer": {"strategy": "dp"}}}, "train.trainer.strategy: Lightning knows no"),
        ({"train": {"trainer": {"precision": "32-mixed"}}}, "train.trainer.precision: Lightning"),
        ({"train": {"trainer": {"devices": "gpu0"}}}, "train.trainer.devices: expected a count"),
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
    assert a.flat()["train.sampler.n_labels"] == 10
    assert a.flat()["validate.cmc_top_k"] == "[1, 5]"
    assert a.short_hash() != b.short_hash()
    assert a.short_hash() == Params().short_hash()


def _key_tree(model: type[BaseModel]) -> dict[str, Any]:
    """Every key ``config.py`` accepts: sections as dicts, settings as ``None``."""
    tree: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        annotation = field.annotation
        is_section = isinstance(annotation, type) and issubclass(annotation, BaseModel)
        tree[name] = _key_tree(annotation) if is_section else None
    return tree


def _yaml_tree(raw: dict[str, Any]) -> dict[str, Any]:
    return {k: _yaml_tree(v) if isinstance(v, dict) and v else None for k, v in raw.items()}


def _dotted(tree: dict[str, Any], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for key, sub in tree.items():
        keys |= _dotted(sub, f"{prefix}{key}.") if sub else {f"{prefix}{key}"}
    return keys


def test_params_yaml_holds_every_key_config_accepts_and_no_other() -> None:
    # `dvc exp run -S key=value` only sets keys params.yaml already has.
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    in_code, in_yaml = _dotted(_key_tree(Params)), _dotted(_yaml_tree(raw))
    assert sorted(in_code - in_yaml) == [], "accepted by config.py, missing in params.yaml"
    assert sorted(in_yaml - in_code) == [], "in params.yaml, unknown to config.py"


def test_code_defaults_equal_params_yaml() -> None:
    # A tool run without params.yaml (or a key left out) behaves as the repo's params say.
    repo = _flat(load_params(REPO_ROOT / "params.yaml").model_dump(mode="json"))
    defaults = _flat(Params().model_dump(mode="json"))
    assert {
        key: (value, repo.get(key)) for key, value in defaults.items() if repo.get(key) != value
    } == {}


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_lightning_names_are_the_ones_lightning_accepts() -> None:
    from typing import get_args

    from lightning.fabric.plugins.precision.precision import (
        _PRECISION_INPUT_STR,
        _PRECISION_INPUT_STR_ALIAS,
    )
    from lightning.pytorch.accelerators import AcceleratorRegistry
    from lightning.pytorch.strategies import StrategyRegistry

    # "auto" and "gpu" are resolved by the Trainer before its registry lookup.
    assert set(ACCELERATORS) == {"auto", "gpu", *AcceleratorRegistry.available_accelerators()}
    assert set(STRATEGIES) == {"auto", *StrategyRegistry.available_strategies()}
    lightning_precisions = {*get_args(_PRECISION_INPUT_STR), *get_args(_PRECISION_INPUT_STR_ALIAS)}
    assert set(PRECISIONS) == lightning_precisions
    assert parse_params({"train": {"trainer": {"precision": 16}}}).train.trainer.precision == "16"
