"""Image preprocessing derived from the model's config, saved with its weights.

``preprocessing`` is a plain dict (it travels in ``models/extractor.json``):
``{"input_size": [3, H, W], "mean": [...], "std": [...], "interpolation": "bicubic"}``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torchvision import transforms as T

if TYPE_CHECKING:
    from embedlab.config import AugmentParams

_INTERPOLATION = {
    "bilinear": T.InterpolationMode.BILINEAR,
    "bicubic": T.InterpolationMode.BICUBIC,
    "nearest": T.InterpolationMode.NEAREST,
}


def _size_and_mode(preprocessing: dict[str, Any]) -> tuple[tuple[int, int], T.InterpolationMode]:
    _, height, width = preprocessing["input_size"]
    mode = _INTERPOLATION.get(
        preprocessing.get("interpolation", "bicubic"), T.InterpolationMode.BICUBIC
    )
    return (int(height), int(width)), mode


def eval_transform(preprocessing: dict[str, Any]) -> T.Compose:
    """Resize to the model's input size and normalise: used by validate, embed and search.

    >>> from PIL import Image
    >>> t = eval_transform({"input_size": [3, 32, 32], "mean": [0.5] * 3, "std": [0.5] * 3})
    >>> tuple(t(Image.new("RGB", (8, 8))).shape)
    (3, 32, 32)
    """
    size, mode = _size_and_mode(preprocessing)
    return T.Compose(
        [
            T.Resize(size, interpolation=mode, antialias=True),
            T.ToTensor(),
            T.Normalize(preprocessing["mean"], preprocessing["std"]),
        ]
    )


def train_transform(preprocessing: dict[str, Any], augment: AugmentParams) -> T.Compose:
    """Light augmentation for training (random resized crop, rotation, optional flip).

    >>> from PIL import Image
    >>> from embedlab.config import AugmentParams
    >>> pre = {"input_size": [3, 32, 32], "mean": [0.5] * 3, "std": [0.5] * 3}
    >>> tuple(train_transform(pre, AugmentParams())(Image.new("RGB", (8, 8))).shape)
    (3, 32, 32)
    """
    size, mode = _size_and_mode(preprocessing)
    steps: list[Any] = []
    if augment.random_resized_crop_scale < 1.0:
        steps.append(
            T.RandomResizedCrop(
                size,
                scale=(augment.random_resized_crop_scale, 1.0),
                interpolation=mode,
                antialias=True,
            )
        )
    else:
        steps.append(T.Resize(size, interpolation=mode, antialias=True))
    if augment.rotation_degrees > 0:
        steps.append(
            T.RandomRotation(augment.rotation_degrees, interpolation=T.InterpolationMode.BILINEAR)
        )
    if augment.horizontal_flip:
        steps.append(T.RandomHorizontalFlip())
    steps += [T.ToTensor(), T.Normalize(preprocessing["mean"], preprocessing["std"])]
    return T.Compose(steps)


def split_transform(transform: Any) -> tuple[Any, Callable[[torch.Tensor], torch.Tensor]]:
    """``(per-item, per-batch)`` halves of a transform; identity batch half if unknown.

    The standard :func:`eval_transform` splits into ``Resize -> PILToTensor`` (uint8 per
    item) and ``to float, / 255, Normalize`` (once per batch): bit-identical values.

    Example:
        >>> from PIL import Image
        >>> full = eval_transform({"input_size": [3, 8, 8], "mean": [0.5] * 3, "std": [0.2] * 3})
        >>> item, batch = split_transform(full)
        >>> image = Image.new("RGB", (4, 4), (10, 200, 30))
        >>> item(image).dtype
        torch.uint8
        >>> torch.equal(batch(item(image)[None]), full(image)[None])
        True
    """
    steps = list(getattr(transform, "transforms", []))
    if (
        len(steps) == 3
        and isinstance(steps[0], T.Resize)
        and isinstance(steps[1], T.ToTensor)
        and isinstance(steps[2], T.Normalize)
    ):
        return T.Compose([steps[0], T.PILToTensor()]), BatchNormalize(steps[2])
    return transform, _identity


class BatchNormalize:
    """``uint8`` batch -> float, ``/ 255``, then ``normalize``: ``ToTensor`` on a batch."""

    def __init__(self, normalize: T.Normalize) -> None:
        self.normalize = normalize

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        # ToTensor's own conversion: to the default float dtype, then / 255.
        return self.normalize(images.to(dtype=torch.get_default_dtype()).div(255))


def _identity(images: torch.Tensor) -> torch.Tensor:
    return images
