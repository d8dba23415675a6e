"""Every component chosen by name in ``params.yaml``, in one place and one form.

Each :class:`~embedlab.registry.Registry` is the single source of its names: config
validation, "did you mean" messages, the docs and the test that builds every entry all
read them from here. Nothing is imported until an entry is used, so importing this
module (and ``embedlab.config``) stays cheap.

>>> LOSSES.names[:1], "hard" in MINERS
(('triplet',), True)
>>> OPTIMIZERS.get("sgd").__name__
'SGD'
"""

from __future__ import annotations

from embedlab.registry import Registry

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

LOSSES = Registry(
    "loss",
    "params.yaml: train.loss.name",
    {
        "triplet": "embedlab.losses.triplet:TripletLossWithMiner",
        "contrastive": "embedlab.losses.contrastive:ContrastiveLoss",
        "multi_similarity": "embedlab.losses.multi_similarity:MultiSimilarityLoss",
        "supcon": "embedlab.losses.supcon:SupConLoss",
        "arcface": "embedlab.losses.arcface:ArcFaceLoss",
        "subcenter_arcface": "embedlab.losses.arcface:SubCenterArcFaceLoss",
        "proxy_anchor": "embedlab.losses.proxy_anchor:ProxyAnchorLoss",
    },
)
"""``train.loss.name``: ``torch.nn.Module`` classes ``(embeddings, labels) -> loss``; each name
is also the name of its argument section in ``train.loss``. Class-weight losses (attribute
``takes_class_weights``) also take ``num_classes`` and ``embedding_size``."""

MINERS = Registry(
    "miner",
    "params.yaml: train.miner.name",
    {
        "all": "embedlab.miners.triplets:AllTripletsMiner",
        "hard": "embedlab.miners.triplets:HardTripletsMiner",
        "multi_similarity": "embedlab.miners.multi_similarity:MultiSimilarityMiner",
    },
)
"""``train.miner.name``: :class:`~embedlab.miners.Miner` classes."""

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
}
