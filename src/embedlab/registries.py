"""Every component chosen by name in ``params.yaml``, in one place and one form.

Each :class:`~embedlab.registry.Registry` is the single source of its names: config
validation, "did you mean" messages, the docs and the test that builds every entry all
read them from here. Nothing is imported until an entry is used, so importing this
module (and ``embedlab.config``) stays cheap.

>>> LOSSES.names[:1], "hard" in MINERS, LOSSES.tag("supcon").memory_bank
(('triplet',), True, True)
>>> OPTIMIZERS.get("sgd").__name__
'SGD'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from embedlab.registry import Entry, Registry

SOURCES = Registry(
    "source",
    "params.yaml: prepare.source",
    {
        "digits": "embedlab.data.sources.digits:prepare_digits",
        "fashion_mnist": "embedlab.data.sources.fashion_mnist:prepare_fashion_mnist",
        "imagefolder": "embedlab.data.sources.imagefolder:prepare_imagefolder",
        "csv": "embedlab.data.sources.csv:prepare_csv",
        "cub": "embedlab.data.sources.cub:prepare_cub",
        "sop": "embedlab.data.sources.sop:prepare_sop",
        "cars": "embedlab.data.sources.cars:prepare_cars",
        "inshop": "embedlab.data.sources.inshop:prepare_inshop",
    },
)
"""``prepare.source``: functions ``(PrepareParams, out_dir) -> PreparedData``."""


@dataclass(frozen=True)
class LossKind:
    """What a loss needs from the train stage; each loss declares its kind in :data:`LOSSES`.

    Config validation and :func:`embedlab.stages.train.build_criterion` read it from there,
    so adding a loss is its module and one registry line.
    """

    name: str
    miner: bool
    """Takes ``train.miner`` (its pairs or triplets); otherwise the miner must be ``all``."""
    memory_bank: bool
    """``train.miner.memory_size`` can feed it (pairs against a bank of past batches)."""
    class_weights: bool
    """Built with ``num_classes`` and ``embedding_size``; learns weights per class, trained
    at ``train.loss.class_weights_lr``."""


TRIPLET = LossKind("triplet", miner=True, memory_bank=False, class_weights=False)
"""Triplets from its own miner object (OML's ``TripletLossWithMiner``)."""
PAIR = LossKind("pair", miner=True, memory_bank=True, class_weights=False)
"""Pairs from a miner, or every pair; a memory bank can be its reference set."""
TUPLE = LossKind("tuple", miner=True, memory_bank=False, class_weights=False)
"""pytorch-metric-learning losses on pairs or triplets from a miner (or all of them)."""
CLASS_WEIGHTS = LossKind("class_weights", miner=False, memory_bank=False, class_weights=True)
"""A weight vector (or several) per training class; no miner."""
WHOLE_BATCH = LossKind("whole_batch", miner=False, memory_bank=False, class_weights=False)
"""pytorch-metric-learning losses that refuse a miner's tuples: the whole batch, always."""

PML_PREFIX = "pml."
"""Names of pytorch-metric-learning components start with it (``pml.CircleLoss``)."""
PML_EXTRA = "pml"
"""The pip extra of embedlab that installs pytorch-metric-learning."""


def _pml(module: str, classes: dict[str, Any]) -> dict[str, Entry]:
    """``pml.<Class>`` entries of ``pytorch_metric_learning.<module>``, tagged."""
    return {
        f"{PML_PREFIX}{name}": Entry(
            f"pytorch_metric_learning.{module}:{name}", tag=tag, extra=PML_EXTRA
        )
        for name, tag in classes.items()
    }


LOSSES = Registry(
    "loss",
    "params.yaml: train.loss.name",
    {
        "triplet": Entry("embedlab.losses.triplet:TripletLossWithMiner", TRIPLET),
        "contrastive": Entry("embedlab.losses.contrastive:ContrastiveLoss", PAIR),
        "multi_similarity": Entry("embedlab.losses.multi_similarity:MultiSimilarityLoss", PAIR),
        "supcon": Entry("embedlab.losses.supcon:SupConLoss", PAIR),
        "arcface": Entry("embedlab.losses.arcface:ArcFaceLoss", CLASS_WEIGHTS),
        "subcenter_arcface": Entry("embedlab.losses.arcface:SubCenterArcFaceLoss", CLASS_WEIGHTS),
        "proxy_anchor": Entry("embedlab.losses.proxy_anchor:ProxyAnchorLoss", CLASS_WEIGHTS),
        # Every pytorch-metric-learning 2.9 loss that takes (embeddings, labels); not
        # ManifoldLoss and VICRegLoss (no labels), nor the wrappers CrossBatchMemory
        # (train.miner.memory_size), SelfSupervisedLoss and MultipleLosses.
        **_pml(
            "losses",
            {
                "AngularLoss": TUPLE,
                "ArcFaceLoss": CLASS_WEIGHTS,
                "CircleLoss": PAIR,
                "ContrastiveLoss": PAIR,
                "CosFaceLoss": CLASS_WEIGHTS,
                "DynamicSoftMarginLoss": TUPLE,
                "FastAPLoss": TUPLE,
                "GeneralizedLiftedStructureLoss": PAIR,
                "HistogramLoss": TUPLE,
                "InstanceLoss": WHOLE_BATCH,
                "IntraPairVarianceLoss": PAIR,
                "LargeMarginSoftmaxLoss": CLASS_WEIGHTS,
                "LiftedStructureLoss": PAIR,
                "MarginLoss": TUPLE,
                "MultiSimilarityLoss": PAIR,
                "NCALoss": TUPLE,
                "NPairsLoss": TUPLE,
                "NTXentLoss": PAIR,
                "NormalizedSoftmaxLoss": CLASS_WEIGHTS,
                "P2SGradLoss": CLASS_WEIGHTS,
                "PNPLoss": WHOLE_BATCH,
                "ProxyAnchorLoss": CLASS_WEIGHTS,
                "ProxyNCALoss": CLASS_WEIGHTS,
                "RankedListLoss": WHOLE_BATCH,
                "SignalToNoiseRatioContrastiveLoss": PAIR,
                "SmoothAPLoss": TUPLE,
                "SoftTripleLoss": CLASS_WEIGHTS,
                "SphereFaceLoss": CLASS_WEIGHTS,
                "SubCenterArcFaceLoss": CLASS_WEIGHTS,
                "SupConLoss": PAIR,
                "ThresholdConsistentMarginLoss": TUPLE,
                "TripletMarginLoss": TUPLE,
                "TupletMarginLoss": PAIR,
            },
        ),
    },
)
"""``train.loss.name``: ``torch.nn.Module`` classes ``(embeddings, labels) -> loss``, each
tagged with its :class:`LossKind`. Each of ours has an argument section of its name in
``train.loss``; a ``pml.*`` loss takes ``train.loss.pml``. Class-weight losses also take
``num_classes`` and ``embedding_size``."""

MINERS = Registry(
    "miner",
    "params.yaml: train.miner.name",
    {
        "all": "embedlab.miners.triplets:AllTripletsMiner",
        "hard": "embedlab.miners.triplets:HardTripletsMiner",
        "multi_similarity": "embedlab.miners.multi_similarity:MultiSimilarityMiner",
        # Not EmbeddingsAlreadyPackagedAsTriplets: it reads the batch as consecutive
        # triplets, which class-balanced batches are not.
        **_pml(
            "miners",
            dict.fromkeys(
                [
                    "AngularMiner",
                    "BatchEasyHardMiner",
                    "BatchHardMiner",
                    "DistanceWeightedMiner",
                    "HDCMiner",
                    "MultiSimilarityMiner",
                    "PairMarginMiner",
                    "TripletMarginMiner",
                    "UniformHistogramMiner",
                ]
            ),
        ),
    },
)
"""``train.miner.name``: :class:`~embedlab.miners.Miner` classes, or pytorch-metric-learning
miners (wrapped in :class:`~embedlab.miners.pml.PmlMiner`)."""

DISTANCES = Registry(
    "distance",
    "params.yaml: train.loss.distance.name / train.miner.distance.name",
    # Not BatchedDistance: a wrapper of another distance, for memory, not a measure.
    _pml(
        "distances",
        dict.fromkeys(["CosineSimilarity", "DotProductSimilarity", "LpDistance", "SNRDistance"]),
    ),
)
"""``train.loss.distance.name``, ``train.miner.distance.name``: pytorch-metric-learning
distances, for ``pml.*`` losses and miners."""

REDUCERS = Registry(
    "reducer",
    "params.yaml: train.loss.reducer.name",
    # Not DoNothingReducer (no scalar loss to train on) nor MultipleReducers (a mapping of
    # reducer objects, which params.yaml cannot hold).
    _pml(
        "reducers",
        dict.fromkeys(
            [
                "AvgNonZeroReducer",
                "ClassWeightedReducer",
                "DivisorReducer",
                "MeanReducer",
                "PerAnchorReducer",
                "SumReducer",
                "ThresholdReducer",
            ]
        ),
    ),
)
"""``train.loss.reducer.name``: pytorch-metric-learning reducers, for ``pml.*`` losses."""

SAMPLERS = Registry(
    "sampler",
    "params.yaml: train.sampler.name",
    {
        "balance": "embedlab.data.samplers:BalanceSampler",
        "category_balance": Entry(
            "embedlab.data.samplers:CategoryBalanceSampler", tag="categories"
        ),
    },
)
"""``train.sampler.name``: batch samplers ``(labels, n_labels, n_instances, ...)``; the one
tagged ``categories`` also takes each item's category and ``n_categories``."""

OPTIMIZERS = Registry(
    "optimizer",
    "params.yaml: train.optimizer.name",
    {
        "adamw": "torch.optim:AdamW",
        "adam": "torch.optim:Adam",
        "sgd": "torch.optim:SGD",
    },
)
"""``train.optimizer.name``: ``torch.optim`` classes."""

TRACKERS = Registry(
    "tracker",
    "params.yaml: tracking.loggers",
    {
        "tensorboard": "embedlab.tracking.tensorboard:TensorBoardTracker",
        "mlflow": "embedlab.tracking.mlflow:MlflowTracker",
        "wandb": "embedlab.tracking.wandb:WandbTracker",
        "neptune": "embedlab.tracking.neptune:NeptuneTracker",
        "dvclive": "embedlab.tracking.dvclive:DvcliveTracker",
        "csv": "embedlab.tracking.csv:CsvTracker",
    },
)
"""``tracking.loggers``: :class:`~embedlab.tracking.Tracker` classes ``(params, root)``."""

INDEXES = Registry(
    "index",
    "params.yaml: embed.index",
    {
        "exact": "embedlab.retrieval.index:ExactIndex",
        "faiss": "embedlab.retrieval.index:FaissIndex",
    },
)
"""``embed.index``: search indexes ``(gallery, metric=..., ...)`` with ``search`` and ``save``."""

ALL: dict[str, Registry] = {
    "sources": SOURCES,
    "losses": LOSSES,
    "miners": MINERS,
    "optimizers": OPTIMIZERS,
    "trackers": TRACKERS,
    "indexes": INDEXES,
    "distances": DISTANCES,
    "reducers": REDUCERS,
    "samplers": SAMPLERS,
}
