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
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from embedlab.errors import EmbedlabError
from embedlab.io import atomic_path, write_json
from embedlab.models.extractor import TimmExtractor

__all__ = [
    "RERANKER_CONFIG",
    "RERANKER_WEIGHTS",
    "PairwiseModel",
    "load_reranker",
    "save_reranker",
    "write_disabled_reranker",
]

RERANKER_WEIGHTS = "reranker.safetensors"
RERANKER_CONFIG = "reranker.json"


class PairwiseModel(nn.Module):
    """Distance of a (query, gallery) image pair from one shared backbone and a small head.

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

    def __init__(self, backbone: TimmExtractor, hidden: int = 128) -> None:
        super().__init__()
        self.backbone = backbone
        self.hidden = hidden
        dim = backbone.feat_dim
        self.head = nn.Sequential(nn.Linear(2 * dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    @classmethod
    def from_extractor(cls, extractor: TimmExtractor, hidden: int = 128) -> PairwiseModel:
        """A model whose backbone is a copy of ``extractor`` (the extractor is not changed)."""
        return cls(copy.deepcopy(extractor), hidden=hidden)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, D]`` backbone features of preprocessed images (computed once per image)."""
        return self.backbone(images)

    def logits(self, query_features: torch.Tensor, gallery_features: torch.Tensor) -> torch.Tensor:
        """``[B]`` logits of "different" for rows of features (what the BCE is taken on)."""
        pair = torch.cat(
            [query_features * gallery_features, (query_features - gallery_features).abs()], dim=-1
        )
        return self.head(pair).squeeze(-1)

    def forward(self, query: torch.Tensor, gallery: torch.Tensor) -> torch.Tensor:
        """``[B]`` distances in ``(0, 1)`` of image pairs ``query[i]``, ``gallery[i]``."""
        return torch.sigmoid(self.logits(self.features(query), self.features(gallery)))

    def config(self, extractor_sha256: str, **facts: Any) -> dict[str, Any]:
        """What :func:`load_reranker` needs to rebuild it, and the extractor it belongs to."""
        return {
            "enabled": True,
            "extractor": self.backbone.config(),
            "extractor_sha256": extractor_sha256,
            "hidden": self.hidden,
            **facts,
        }


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
        **ext.get("timm_kwargs", {}),
    )
    model = PairwiseModel(backbone, hidden=int(config["hidden"]))
    state = load_file(str(Path(model_dir) / RERANKER_WEIGHTS))
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise EmbedlabError(
            f"{config_path}: weights do not fit the saved config ({len(result.missing_keys)} "
            f"missing keys, {len(result.unexpected_keys)} unexpected)"
        )
    return model.to(device).eval()
