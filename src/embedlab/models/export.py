"""Export the trained extractor for serving: ONNX or TorchScript.

The exported graph takes a ``[batch, 3, H, W]`` float tensor preprocessed as at training
time (resize, scale to [0, 1], normalise with the saved mean/std, see
:func:`embedlab.data.transforms.eval_transform`) and returns ``[batch, dim]``
embeddings (L2-normalised when the extractor normalises). The batch size is dynamic.
The extractor's config (``extractor.json``: arch, preprocessing, feature size) travels
inside the file: ONNX ``metadata_props["embedlab.extractor"]``, TorchScript extra file
``extractor.json``. So do the verification thresholds the validate stage chose for these
weights (``reports/thresholds.json``: each distance with the false match rate it was
chosen at): ONNX ``metadata_props["embedlab.thresholds"]``, TorchScript extra file
``thresholds.json``; :func:`exported_thresholds` reads them back.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Literal

import torch

from embedlab.errors import EmbedlabError
from embedlab.io import atomic_path, file_sha256
from embedlab.models.extractor import (
    EXTRACTOR_CONFIG,
    EXTRACTOR_WEIGHTS,
    TimmExtractor,
    load_extractor,
)
from embedlab.models.pairwise import PairwiseModel, load_reranker
from embedlab.models.thresholds import THRESHOLDS_FILE, Thresholds, read_thresholds

__all__ = [
    "DEFAULT_NAMES",
    "FORMATS",
    "export_extractor",
    "export_onnx",
    "export_reranker",
    "export_reranker_onnx",
    "export_torchscript",
    "exported_thresholds",
]

Format = Literal["onnx", "torchscript"]
FORMATS: tuple[str, ...] = ("onnx", "torchscript")
DEFAULT_NAMES: dict[str, str] = {"onnx": "extractor.onnx", "torchscript": "extractor.pt"}
"""File written into the models folder when no output path is given."""

INPUT_NAME, OUTPUT_NAME = "images", "embeddings"
METADATA_KEY = "embedlab.extractor"
THRESHOLDS_KEY = "embedlab.thresholds"


def _example_input(model: TimmExtractor, batch: int = 2) -> torch.Tensor:
    channels, height, width = model.preprocessing["input_size"]
    return torch.randn(batch, channels, height, width, generator=torch.Generator().manual_seed(0))


def export_onnx(
    model: TimmExtractor,
    path: str | Path,
    opset: int = 18,
    dynamo: bool = False,
    thresholds: Thresholds | None = None,
) -> Path:
    """Write ``model`` as an ONNX file with a dynamic batch axis, atomically.

    ``dynamo=False`` uses PyTorch's TorchScript-based exporter (well-trodden for timm
    models and ~30x faster to run); ``dynamo=True`` the ``torch.export``-based one
    (needs ``onnxscript``). Both give the same embeddings within 1e-4. ``thresholds``
    travel in ``metadata_props["embedlab.thresholds"]``.

    Example:
        >>> import tempfile, pathlib, onnxruntime
        >>> model = TimmExtractor("vit_tiny_patch16_224", img_size=16, patch_size=8, depth=1,
        ...                       embed_dim=32, num_heads=2).eval()
        >>> path = export_onnx(model, pathlib.Path(tempfile.mkdtemp()) / "m.onnx")
        >>> session = onnxruntime.InferenceSession(str(path))
        >>> session.run(None, {"images": _example_input(model, 3).numpy()})[0].shape
        (3, 32)
    """
    import onnx

    path = Path(path)
    model = model.eval()
    example = _example_input(model)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exporter chatter (TracerWarnings, deprecations)
        if dynamo:
            program = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1)}},
                opset_version=opset,
                external_data=False,
            )
            if program is None:  # pragma: no cover - dynamo=True always returns a program
                raise EmbedlabError("ONNX export produced nothing")
            program.save(str(tmp), external_data=False)
        else:
            torch.onnx.export(
                model,
                (example,),
                str(tmp),
                dynamo=False,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                opset_version=opset,
            )
        proto = onnx.load(str(tmp))
        entry = proto.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, json.dumps(model.config())
        if thresholds is not None:
            entry = proto.metadata_props.add()
            entry.key, entry.value = THRESHOLDS_KEY, json.dumps(thresholds.to_json())
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
    return path


def export_reranker_onnx(model: PairwiseModel, path: str | Path, opset: int = 18) -> Path:
    """Write the pairwise re-ranker as ONNX, atomically: inputs ``query`` and ``gallery``
    (``[batch, 3, H, W]``, preprocessed like the extractor's), output ``distances``
    (``[batch]``, in ``(0, 1)``); dynamic batch; either head (``features`` or
    ``stacked``). Its config travels in
    ``metadata_props["embedlab.reranker"]``.

    Example:
        >>> import tempfile, pathlib, onnxruntime
        >>> model = PairwiseModel.from_extractor(TimmExtractor("resnet10t", input_size=16), 8)
        >>> path = export_reranker_onnx(model, pathlib.Path(tempfile.mkdtemp()) / "r.onnx")
        >>> session = onnxruntime.InferenceSession(str(path))
        >>> q, g = _example_input(model.backbone, 3), _example_input(model.backbone, 3) * 0.5
        >>> out = session.run(None, {"query": q.numpy(), "gallery": g.numpy()})[0]
        >>> out.shape, bool(abs(out - model.eval()(q, g).detach().numpy()).max() < 1e-4)
        ((3,), True)
    """
    import onnx

    path = Path(path)
    model = model.eval()
    example = _example_input(model.backbone)
    names = ["query", "gallery"]
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exporter chatter (TracerWarnings, deprecations)
        torch.onnx.export(
            model,
            (example, example),
            str(tmp),
            dynamo=False,
            input_names=names,
            output_names=["distances"],
            dynamic_axes={**{n: {0: "batch"} for n in names}, "distances": {0: "batch"}},
            opset_version=opset,
        )
        proto = onnx.load(str(tmp))
        entry = proto.metadata_props.add()
        config = {
            "extractor": model.backbone.config(),
            "head": model.head_kind,
            "hidden": model.hidden,
            "distance_weight": model.distance_weight,
        }
        entry.key, entry.value = "embedlab.reranker", json.dumps(config)
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
    return path


def export_torchscript(
    model: TimmExtractor, path: str | Path, thresholds: Thresholds | None = None
) -> Path:
    """Write ``model`` as a traced TorchScript module (``torch.jit.load`` reads it), atomically;
    ``thresholds`` travel as the extra file ``thresholds.json``.

    Example:
        >>> import tempfile, pathlib
        >>> model = TimmExtractor("vit_tiny_patch16_224", img_size=16, patch_size=8, depth=1,
        ...                       embed_dim=32, num_heads=2).eval()
        >>> path = export_torchscript(model, pathlib.Path(tempfile.mkdtemp()) / "m.pt")
        >>> torch.jit.load(str(path))(_example_input(model, 3)).shape
        torch.Size([3, 32])
    """
    path = Path(path)
    model = model.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings on shape arithmetic, deprecations
        traced = torch.jit.trace(model, _example_input(model), check_trace=False)
        traced = torch.jit.freeze(traced)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.save's deprecation notice
        extra = {EXTRACTOR_CONFIG: json.dumps(model.config())}
        if thresholds is not None:
            extra[THRESHOLDS_FILE] = json.dumps(thresholds.to_json())
        torch.jit.save(traced, str(tmp), _extra_files=extra)
    return path


def exported_thresholds(path: str | Path) -> Thresholds | None:
    """The thresholds inside an exported ONNX or TorchScript file (None: it has none).

    Example:
        >>> import tempfile, pathlib
        >>> from embedlab.models.thresholds import Threshold
        >>> model = TimmExtractor("resnet10t", input_size=16).eval()
        >>> chosen = Thresholds("euclidean", "ab", 10, 90, (Threshold(0.01, 0.8, 0.0099, 0.2),))
        >>> path = export_torchscript(model, pathlib.Path(tempfile.mkdtemp()) / "m.pt", chosen)
        >>> exported_thresholds(path) == chosen
        True
    """
    path = Path(path)
    if path.suffix == ".onnx":
        import onnx

        proto = onnx.load(str(path), load_external_data=False)
        props = {p.key: p.value for p in proto.metadata_props}
        text = props.get(THRESHOLDS_KEY)
    else:
        extra = {THRESHOLDS_FILE: ""}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
            torch.jit.load(str(path), _extra_files=extra)
        text = extra[THRESHOLDS_FILE] or None
    if text is None:
        return None
    return Thresholds.from_json(json.loads(text), f"{path} ({THRESHOLDS_KEY})")


def export_extractor(
    model_dir: str | Path = "models",
    fmt: str = "onnx",
    out: str | Path | None = None,
    *,
    dynamo: bool = False,
    thresholds: str | Path | None = None,
    with_thresholds: bool = True,
) -> Path:
    """Export the extractor saved in ``model_dir``; return the written file.

    Args:
        model_dir: folder with ``extractor.safetensors`` and ``extractor.json``.
        fmt: ``onnx`` or ``torchscript``.
        out: output file (or folder); default ``<model_dir>/extractor.onnx`` or ``extractor.pt``.
        dynamo: ONNX only: use the ``torch.export``-based exporter.
        thresholds: the validate stage's ``thresholds.json`` to embed (refused when chosen
            for other weights); default ``<model_dir>/../reports/thresholds.json``, left
            out when that file does not exist.
        with_thresholds: False: embed no thresholds.

    Example:
        >>> import tempfile, pathlib
        >>> from embedlab.models import save_extractor
        >>> models = pathlib.Path(tempfile.mkdtemp())
        >>> _ = save_extractor(TimmExtractor("vit_tiny_patch16_224", img_size=16, patch_size=8,
        ...                                  depth=1, embed_dim=32, num_heads=2), models)
        >>> export_extractor(models, "torchscript").name
        'extractor.pt'
        >>> export_extractor(models, "tflite")
        Traceback (most recent call last):
        ...
        embedlab.errors.EmbedlabError: export: format must be one of onnx, torchscript, got 'tflite'
    """
    if fmt not in FORMATS:
        raise EmbedlabError(f"export: format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    model = load_extractor(model_dir)
    chosen = _thresholds_for(Path(model_dir), thresholds) if with_thresholds else None
    target = Path(out) if out is not None else Path(model_dir) / DEFAULT_NAMES[fmt]
    if target.is_dir():
        target = target / DEFAULT_NAMES[fmt]
    if fmt == "onnx":
        try:
            import onnx  # noqa: F401

            if dynamo:
                import onnxscript  # noqa: F401
        except ImportError:
            raise EmbedlabError(
                "ONNX export needs onnx and onnxscript: pip install 'embedlab[export]'"
            ) from None
        return export_onnx(model, target, dynamo=dynamo, thresholds=chosen)
    return export_torchscript(model, target, thresholds=chosen)


def _thresholds_for(model_dir: Path, path: str | Path | None) -> Thresholds | None:
    """The thresholds of the weights in ``model_dir`` (None when the default file is absent)."""
    source = Path(path) if path is not None else model_dir.parent / "reports" / THRESHOLDS_FILE
    if path is None and not source.is_file():
        return None
    chosen = read_thresholds(source)
    if chosen.extractor_sha256 != file_sha256(model_dir / EXTRACTOR_WEIGHTS):
        raise EmbedlabError(
            f"{source}: chosen for other weights than {model_dir / EXTRACTOR_WEIGHTS} "
            "(rerun the validate stage, or export --no-thresholds)"
        )
    return chosen


def export_reranker(model_dir: str | Path = "models", out: str | Path | None = None) -> Path:
    """Export the re-ranker of ``<model_dir>/reranker/`` as ONNX; return the written file.

    It must belong to the extractor in ``model_dir`` (the sha256 it stores); default
    output ``<model_dir>/reranker/reranker.onnx``.
    """
    model_dir = Path(model_dir)
    folder = model_dir / "reranker"
    model = load_reranker(folder, extractor_sha256=file_sha256(model_dir / EXTRACTOR_WEIGHTS))
    if model is None:
        raise EmbedlabError(f"{folder}: no re-ranker was trained (set rerank.enabled: true)")
    target = Path(out) if out is not None else folder / "reranker.onnx"
    if target.is_dir():
        target = target / "reranker.onnx"
    return export_reranker_onnx(model, target)
