"""Exported extractors (ONNX, TorchScript) give the PyTorch embeddings on real images."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from embedlab.data.datasets import load_image
from embedlab.data.transforms import eval_transform
from embedlab.errors import EmbedlabError
from embedlab.models import TimmExtractor, load_extractor, save_extractor
from embedlab.models.export import export_extractor
from tests.unit.test_searcher import TINY, make_images


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.Tensor, torch.Tensor]:
    """A saved tiny extractor, 5 preprocessed test images and their PyTorch embeddings."""
    root = tmp_path_factory.mktemp("export")
    torch.manual_seed(3)
    save_extractor(TimmExtractor("vit_tiny_patch16_224", **TINY), root / "models")
    model = load_extractor(root / "models")
    transform = eval_transform(model.preprocessing)
    files = [root / "images" / p for p in make_images(root / "images", n_classes=2, per_class=3)][
        :5
    ]
    images = torch.stack([transform(load_image(str(f))) for f in files])
    with torch.inference_mode():
        expected = model(images)
    return root / "models", images, expected


def test_torchscript_matches_pytorch(setup: tuple[Path, torch.Tensor, torch.Tensor]) -> None:
    models, images, expected = setup
    path = export_extractor(models, "torchscript")
    assert path == models / "extractor.pt"
    extra = {"extractor.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
        loaded = torch.jit.load(str(path), _extra_files=extra)
    for batch in (images, images[:1]):  # the batch size of the trace is not baked in
        with torch.inference_mode():
            out = loaded(batch)
        np.testing.assert_allclose(out.numpy(), expected[: len(batch)].numpy(), atol=1e-4)
    assert json.loads(extra["extractor.json"])["preprocessing"]["input_size"] == [3, 16, 16]


@pytest.mark.parametrize("dynamo", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_onnx_matches_pytorch(
    setup: tuple[Path, torch.Tensor, torch.Tensor], tmp_path: Path, dynamo: bool
) -> None:
    import onnx
    import onnxruntime

    models, images, expected = setup
    path = export_extractor(models, "onnx", tmp_path / "served.onnx", dynamo=dynamo)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    for batch in (images, images[:1]):
        (out,) = session.run(["embeddings"], {"images": batch.numpy()})
        np.testing.assert_allclose(out, expected[: len(batch)].numpy(), atol=1e-4)
    metadata = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(metadata["embedlab.extractor"])["feat_dim"] == 32


def test_export_into_a_folder_and_errors(
    setup: tuple[Path, torch.Tensor, torch.Tensor], tmp_path: Path
) -> None:
    models, _, _ = setup
    assert export_extractor(models, "torchscript", tmp_path) == tmp_path / "extractor.pt"
    with pytest.raises(EmbedlabError, match="format must be one of onnx, torchscript"):
        export_extractor(models, "coreml")
    with pytest.raises(EmbedlabError, match=r"extractor.json: extractor config not found"):
        export_extractor(tmp_path / "empty", "onnx")


@pytest.mark.parametrize("head", ["features", "stacked"])
def test_reranker_exports_to_onnx_with_the_pytorch_distances_and_checks_its_extractor(
    tmp_path: Path, head: str
) -> None:
    import onnxruntime

    from embedlab.io import file_sha256
    from embedlab.models.export import export_reranker
    from embedlab.models.pairwise import build_pairwise_model, save_reranker

    models = tmp_path / "models"
    torch.manual_seed(0)
    extractor = TimmExtractor("resnet10t", input_size=16)
    save_extractor(extractor, models)
    model = build_pairwise_model(extractor, head, hidden=8).eval()
    sha = file_sha256(models / "extractor.safetensors")
    save_reranker(model, models / "reranker", extractor_sha256=sha)
    path = export_reranker(models)
    assert path == models / "reranker" / "reranker.onnx"
    query, gallery = torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16)
    session = onnxruntime.InferenceSession(str(path))
    out = session.run(None, {"query": query.numpy(), "gallery": gallery.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(out, model(query, gallery).numpy(), atol=1e-4)
    save_reranker(model, models / "reranker", extractor_sha256="0" * 64)
    with pytest.raises(EmbedlabError, match="another extractor"):
        export_reranker(models)
