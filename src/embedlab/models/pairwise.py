"""The pairwise re-ranker model: a query image and a gallery image in, a distance out.

OML's ``ConcatSiamese`` idea in our own code: both images go through one backbone (a copy
of the trained extractor, so it starts from its weights), and a small head reads the
two feature vectors (their product and absolute difference, symmetric in the two
images) and gives the logit of "different items". The distance is that probability,
in ``(0, 1)``. It is trained with a binary cross-entropy on mined same/different pairs
(:mod:`embedlab.stages.rerank`) and used by
:class:`~embedlab.embedding.reranker.PairwiseReranker`.

Saved as ``models/reranker/reranker.safetensors`` + ``reranker.json``; the JSON keeps the
sha256 of the extractor weights it was trained from, and :func:`load_reranker` refuses
another extractor.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from embedlab.errors import EmbedlabError
from embedlab.io import atomic_path, write_json
from embedlab.models.extractor import TimmExtractor

__all__ = [
    "PAIR_HEADS",
    "RERANKER_CONFIG",
    "RERANKER_WEIGHTS",
    "PairwiseModel",
    "StackedPairwiseModel",
    "build_pairwise_model",
    "load_reranker",
    "save_reranker",
    "widen_first_conv",
    "write_disabled_reranker",
]

RERANKER_WEIGHTS = "reranker.safetensors"
RERANKER_CONFIG = "reranker.json"
PAIR_HEADS = ("features", "stacked")
"""``rerank.head``: a head on the two images' features, or the two images stacked."""

ImageLoader = Callable[[torch.Tensor], torch.Tensor]
"""Item positions -> their preprocessed images ``[B, C, H, W]``."""


class PairwiseModel(nn.Module):
    """Distance of a (query, gallery) image pair from one shared backbone and a small head
    on the two images' features (``rerank.head: features``).

    Args:
        backbone: the feature extractor (trained further with the head); its weights are
            the extractor's when built with :meth:`from_extractor`.
        hidden: width of the head's hidden layer.

    Example:
        >>> extractor = TimmExtractor("resnet10t", input_size=16)
        >>> model = PairwiseModel.from_extractor(extractor, hidden=8).eval()
        >>> a, b = torch.zeros(2, 3, 16, 16), torch.ones(2, 3, 16, 16)
        >>> d = model(a, b)
        >>> d.shape, bool(((d > 0) & (d < 1)).all()), torch.allclose(d, model(b, a))
        (torch.Size([2]), True, True)
    """

    head_kind = "features"

    def __init__(self, backbone: TimmExtractor, hidden: int = 128) -> None:
        super().__init__()
        self.backbone = backbone
        self.hidden = hidden
        self.head = self._build_head(backbone.feat_dim, hidden)
        self.distance_weight = 0.0
        """Weight of the extractor's distance when re-ranking (``rerank.distance_weight``)."""

    def _build_head(self, dim: int, hidden: int) -> nn.Module:
        return nn.Sequential(nn.Linear(2 * dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    @classmethod
    def from_extractor(cls, extractor: TimmExtractor, hidden: int = 128) -> PairwiseModel:
        """A model whose backbone is a copy of ``extractor`` (the extractor is not changed)."""
        return cls(copy.deepcopy(extractor), hidden=hidden)

    @property
    def preprocessing(self) -> dict[str, Any]:
        """How each of the two images is preprocessed: as the extractor's inputs."""
        return self.backbone.preprocessing

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, D]`` backbone features of preprocessed images (computed once per image)."""
        return self.backbone(images)

    def logits(self, query_features: torch.Tensor, gallery_features: torch.Tensor) -> torch.Tensor:
        """``[B]`` logits of "different" for rows of features (what the BCE is taken on)."""
        pair = torch.cat(
            [query_features * gallery_features, (query_features - gallery_features).abs()], dim=-1
        )
        return self.head(pair).squeeze(-1)

    def pair_logits(
        self,
        images: ImageLoader,
        anchors: torch.Tensor,
        others: torch.Tensor,
        batch_size: int | None = None,
    ) -> torch.Tensor:
        """``[P]`` logits of "different" for item pairs ``anchors[i]``, ``others[i]``.

        Each distinct item goes through the backbone once (``batch_size`` images per
        pass; None: one pass), then the head reads the pairs of features. What training
        and re-ranking both call, whatever the head.
        """
        device = next(self.parameters()).device
        distinct, slot = torch.unique(torch.cat([anchors, others]), return_inverse=True)
        chunks = distinct.split(batch_size or max(1, distinct.numel()))
        features = torch.cat([self.features(images(c).to(device)) for c in chunks])
        n = anchors.numel()
        return self.logits(features[slot[:n]], features[slot[n:]])

    def forward(self, query: torch.Tensor, gallery: torch.Tensor) -> torch.Tensor:
        """``[B]`` distances in ``(0, 1)`` of image pairs ``query[i]``, ``gallery[i]``."""
        return torch.sigmoid(self.logits(self.features(query), self.features(gallery)))

    def config(self, extractor_sha256: str, **facts: Any) -> dict[str, Any]:
        """What :func:`load_reranker` needs to rebuild it, and the extractor it belongs to."""
        return {
            "enabled": True,
            "head": self.head_kind,
            "extractor": self.backbone.config(),
            "extractor_sha256": extractor_sha256,
            "hidden": self.hidden,
            "distance_weight": self.distance_weight,
            **facts,
        }


class StackedPairwiseModel(PairwiseModel):
    """Both images stacked as one input (``rerank.head: stacked``): OML's ``ConcatSiamese``
    idea for a CNN, the two images concatenated along the channels.

    The backbone's first convolution is widened to twice its input channels, the
    extractor's weights copied into both halves and halved, so that at the start it sees
    the mean of the two images; the head reads the one feature vector. The order of the
    two images matters to the network: training presents each pair in a random order,
    and eval mode averages the logits of both orders, so the distance is symmetric.

    Example:
        >>> extractor = TimmExtractor("resnet10t", input_size=16)
        >>> model = StackedPairwiseModel.from_extractor(extractor, hidden=8).eval()
        >>> a, b = torch.zeros(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
        >>> d = model(a, b)
        >>> d.shape, bool(((d > 0) & (d < 1)).all()), torch.allclose(d, model(b, a))
        (torch.Size([2]), True, True)
    """

    head_kind = "stacked"

    def __init__(self, backbone: TimmExtractor, hidden: int = 128) -> None:
        widen_first_conv(backbone)
        super().__init__(backbone, hidden)

    def _build_head(self, dim: int, hidden: int) -> nn.Module:
        return nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def stacked_logits(self, query: torch.Tensor, gallery: torch.Tensor) -> torch.Tensor:
        """``[B]`` logits of image pairs, in this order (no averaging over the two)."""
        return self.head(self.backbone(torch.cat([query, gallery], dim=1))).squeeze(-1)

    def symmetric_logits(self, query: torch.Tensor, gallery: torch.Tensor) -> torch.Tensor:
        """Training: each pair in a random order; eval: the mean over both orders."""
        if self.training:
            swap = (torch.rand(query.shape[0], device=query.device) < 0.5)[:, None, None, None]
            first, second = torch.where(swap, gallery, query), torch.where(swap, query, gallery)
            return self.stacked_logits(first, second)
        both = self.stacked_logits(torch.cat([query, gallery]), torch.cat([gallery, query]))
        return both.view(2, -1).mean(dim=0)

    def pair_logits(
        self,
        images: ImageLoader,
        anchors: torch.Tensor,
        others: torch.Tensor,
        batch_size: int | None = None,
    ) -> torch.Tensor:
        """``[P]`` logits of item pairs: each pair is one backbone pass (two in eval mode)."""
        device = next(self.parameters()).device
        size = batch_size or max(1, anchors.numel())
        parts = [
            self.symmetric_logits(images(a).to(device), images(o).to(device))
            for a, o in zip(anchors.split(size), others.split(size), strict=True)
        ]
        return torch.cat(parts) if parts else torch.zeros(0, device=device)

    def forward(self, query: torch.Tensor, gallery: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.symmetric_logits(query, gallery))


def widen_first_conv(backbone: nn.Module, factor: int = 2) -> nn.Conv2d:
    """Give the first convolution ``factor`` times its input channels, in place: the
    trained weights copied into each group and divided by ``factor`` (same output for
    ``factor`` copies of one image). Returns the new convolution.

    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    >>> x = torch.rand(1, 3, 5, 5)
    >>> before = net(x)
    >>> widen_first_conv(net).in_channels
    6
    >>> torch.allclose(net(torch.cat([x, x], dim=1)), before, atol=1e-6)
    True
    """
    found = next(((n, m) for n, m in backbone.named_modules() if isinstance(m, nn.Conv2d)), None)
    if found is None:
        raise EmbedlabError(
            f"rerank.head: stacked needs a convolutional first layer; {type(backbone).__name__} "
            "has none (use rerank.head: features)"
        )
    name, module = found
    if module.groups != 1:
        raise EmbedlabError(f"rerank.head: stacked: the first convolution {name!r} is grouped")
    wide = nn.Conv2d(
        module.in_channels * factor,
        module.out_channels,
        module.kernel_size,  # type: ignore[arg-type]
        module.stride,  # type: ignore[arg-type]
        module.padding,  # type: ignore[arg-type]
        module.dilation,  # type: ignore[arg-type]
        bias=module.bias is not None,
        padding_mode=module.padding_mode,
    )
    with torch.no_grad():
        wide.weight.copy_(module.weight.repeat(1, factor, 1, 1) / factor)
        if module.bias is not None:
            wide.bias.copy_(module.bias)  # type: ignore[union-attr]
    parent_name, _, attr = name.rpartition(".")
    setattr(backbone.get_submodule(parent_name) if parent_name else backbone, attr, wide)
    return wide


def build_pairwise_model(extractor: TimmExtractor, head: str, hidden: int) -> PairwiseModel:
    """A pairwise model of kind ``head`` (:data:`PAIR_HEADS`) starting from ``extractor``.

    >>> build_pairwise_model(TimmExtractor("resnet10t", input_size=8), "stacked", 4).head_kind
    'stacked'
    """
    kinds = {"features": PairwiseModel, "stacked": StackedPairwiseModel}
    if head not in kinds:
        raise EmbedlabError(f"rerank.head: expected one of {list(kinds)}, got {head!r}")
    return kinds[head].from_extractor(extractor, hidden=hidden)


def save_reranker(
    model: PairwiseModel, out_dir: str | Path, extractor_sha256: str, **facts: Any
) -> tuple[Path, Path]:
    """Write ``reranker.safetensors`` + ``reranker.json`` into ``out_dir``, atomically.

    ``facts`` (top_n, pairs...) are stored in the JSON beside the config.
    """
    out_dir = Path(out_dir)
    weights = out_dir / RERANKER_WEIGHTS
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(weights) as tmp:
        save_file(state, str(tmp))
    config = out_dir / RERANKER_CONFIG
    write_json(config, model.config(extractor_sha256, **facts))
    return weights, config


def write_disabled_reranker(out_dir: str | Path) -> Path:
    """The stage's output when ``rerank.enabled`` is false: a note, no weights.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> load_reranker(write_disabled_reranker(folder).parent, extractor_sha256="ab") is None
    True
    """
    out_dir = Path(out_dir)
    (out_dir / RERANKER_WEIGHTS).unlink(missing_ok=True)
    config = out_dir / RERANKER_CONFIG
    write_json(config, {"enabled": False})
    return config


def load_reranker(
    model_dir: str | Path, extractor_sha256: str, device: str | torch.device = "cpu"
) -> PairwiseModel | None:
    """The re-ranker saved in ``model_dir`` in eval mode; None when it was not trained.

    Args:
        model_dir: folder with ``reranker.json`` (and ``reranker.safetensors``).
        extractor_sha256: sha256 of the extractor weights in use; a re-ranker trained on
            another extractor is refused with a one-line :class:`EmbedlabError`.
    """
    config_path = Path(model_dir) / RERANKER_CONFIG
    if not config_path.is_file():
        raise EmbedlabError(f"{config_path}: re-ranker not found (run the rerank stage first)")
    config = json.loads(config_path.read_text())
    if not config.get("enabled", False):
        return None
    trained_on = str(config.get("extractor_sha256", ""))
    if trained_on != extractor_sha256:
        raise EmbedlabError(
            f"{config_path}: the re-ranker was trained on another extractor (sha256 "
            f"{trained_on[:12]}, in use {extractor_sha256[:12]}); rerun `dvc repro rerank`"
        )
    ext = config["extractor"]
    backbone = TimmExtractor(
        ext["arch"],
        weights=None,
        normalise_features=ext["normalise_features"],
        input_size=ext.get("input_size"),
        head=ext.get("head", "none"),
        embedding_size=ext.get("embedding_size", 128),
        **ext.get("timm_kwargs", {}),
    )
    head = str(config.get("head", "features"))
    if head not in PAIR_HEADS:
        raise EmbedlabError(
            f"{config_path}: head: expected one of {list(PAIR_HEADS)}, got {head!r}"
        )
    model = build_pairwise_model(backbone, head, int(config["hidden"]))
    model.distance_weight = float(config.get("distance_weight", 0.0))
    state = load_file(str(Path(model_dir) / RERANKER_WEIGHTS))
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise EmbedlabError(
            f"{config_path}: weights do not fit the saved config ({len(result.missing_keys)} "
            f"missing keys, {len(result.unexpected_keys)} unexpected)"
        )
    return model.to(device).eval()
