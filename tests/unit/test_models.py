from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from embedlab.errors import EmbedlabError
from embedlab.models import (
    TimmExtractor,
    ViTExtractor,
    load_extractor,
    resolve_arch,
    save_extractor,
)

TINY = {"img_size": 16, "patch_size": 8, "depth": 1, "embed_dim": 32, "num_heads": 2}


def test_zoo_aliases_map_to_timm_names() -> None:
    assert resolve_arch("vits16_dino") == "vit_small_patch16_224.dino"
    assert resolve_arch("vitb8") == "vit_base_patch8_224"
    assert resolve_arch("resnet18") == "resnet18"


def test_extractor_normalises_and_reports_preprocessing() -> None:
    model = TimmExtractor("vit_tiny_patch16_224", **TINY).eval()
    out = model(torch.randn(3, 3, 16, 16))
    assert out.shape == (3, 32)
    assert torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-5)
    assert model.preprocessing["input_size"] == [3, 16, 16]
    raw = TimmExtractor("vit_tiny_patch16_224", normalise_features=False, **TINY).eval()
    assert not torch.allclose(raw(torch.randn(2, 3, 16, 16)).norm(dim=1), torch.ones(2))


def test_any_timm_arch_works() -> None:
    model = TimmExtractor("resnet18", normalise_features=False).eval()
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, model.feat_dim) == (1, 512)


def test_vit_extractor_keeps_oml_signature() -> None:
    model = ViTExtractor(None, arch="vits16", normalise_features=False)
    assert model.feat_dim == 384 and model.arch == "vits16"


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    model = TimmExtractor("vit_tiny_patch16_224", **TINY).eval()
    save_extractor(model, tmp_path)
    loaded = load_extractor(tmp_path)
    x = torch.randn(2, 3, 16, 16)
    assert torch.allclose(model(x), loaded(x), atol=1e-6)
    assert loaded.config() == model.config()


def test_local_weights_file_loads_and_wrong_arch_is_refused(tmp_path: Path) -> None:
    source = TimmExtractor("vit_tiny_patch16_224", **TINY)
    state = {f"model.{k}": v.contiguous() for k, v in source.model.state_dict().items()}
    save_file(state, str(tmp_path / "w.safetensors"))  # with a Lightning-like prefix
    torch.save(source.model.state_dict(), tmp_path / "w.pth")
    for name in ("w.safetensors", "w.pth"):
        target = TimmExtractor("vit_tiny_patch16_224", weights=tmp_path / name, **TINY).eval()
        x = torch.randn(1, 3, 16, 16)
        assert torch.allclose(source.eval()(x), target(x), atol=1e-6)
    with pytest.raises(EmbedlabError, match=r"w.safetensors: weights do not fit arch 'resnet18'"):
        TimmExtractor("resnet18", weights=tmp_path / "w.safetensors")


def test_bad_weights_files(tmp_path: Path) -> None:
    with pytest.raises(EmbedlabError, match=r"nope.pth: weights file not found"):
        TimmExtractor("vit_tiny_patch16_224", weights=tmp_path / "nope.pth", **TINY)
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(EmbedlabError, match=r"junk.safetensors: cannot read weights"):
        TimmExtractor("vit_tiny_patch16_224", weights=tmp_path / "junk.safetensors", **TINY)


def test_pickled_objects_are_never_loaded(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(EmbedlabError, match="cannot read weights"):
        TimmExtractor("vit_tiny_patch16_224", weights=tmp_path / "evil.pth", **TINY)


def test_unknown_arch_is_a_params_error() -> None:
    with pytest.raises(EmbedlabError, match=r"train.model.arch: unknown timm model 'vit_nope'"):
        TimmExtractor("vit_nope")


def test_input_size_is_a_param_of_any_architecture(tmp_path) -> None:
    from embedlab.config import parse_params
    from embedlab.models import load_extractor, save_extractor

    cnn = TimmExtractor("resnet10t", input_size=28, channels=[8, 8, 16, 16], stem_width=8)
    assert cnn.preprocessing["input_size"] == [3, 28, 28]
    assert cnn(torch.zeros(2, 3, 28, 28)).shape == (2, 16)
    save_extractor(cnn, tmp_path)
    assert load_extractor(tmp_path).preprocessing["input_size"] == [3, 28, 28]
    # input_size wins over a ViT's img_size for preprocessing; [h, w] works too
    vit = TimmExtractor(
        "vit_tiny_patch16_224", input_size=[16, 24], img_size=[16, 24], patch_size=8, depth=1
    )
    assert vit.preprocessing["input_size"] == [3, 16, 24]
    assert parse_params({"train": {"model": {"input_size": 28}}}).train.model.input_size == 28


def test_an_input_size_a_vit_was_not_built_for_is_a_params_error() -> None:
    # timm would assert at the first forward pass, in the middle of the train stage
    vit = {"img_size": 16, "patch_size": 8, "depth": 1, "embed_dim": 32, "num_heads": 2}
    with pytest.raises(
        EmbedlabError, match=r"train.model.input_size: \[28, 28\] does not fit .* built for \[16"
    ):
        TimmExtractor("vit_tiny_patch16_224", input_size=28, **vit)
    flexible = TimmExtractor("vit_tiny_patch16_224", input_size=24, dynamic_img_size=True, **vit)
    assert flexible.eval()(torch.zeros(1, 3, 24, 24)).shape == (1, 32)
    assert TimmExtractor("vit_tiny_patch16_224", input_size=16, **vit).feat_dim == 32
