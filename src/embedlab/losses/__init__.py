"""Metric-learning losses: triplet, pair losses, class-weight losses, the memory wrapper,
and ``PmlLoss`` (any pytorch-metric-learning loss as a criterion).

Each equals its pytorch-metric-learning (or OML, for the triplet loss) counterpart on the
same batch (:func:`embedlab.stages.train.build_criterion` makes the one ``params.yaml``
names).
"""

from embedlab.losses.arcface import ArcFaceLoss, SubCenterArcFaceLoss
from embedlab.losses.contrastive import ContrastiveLoss
from embedlab.losses.cross_batch_memory import CrossBatchMemory
from embedlab.losses.multi_similarity import MultiSimilarityLoss
from embedlab.losses.pair_base import PairLoss
from embedlab.losses.pml import PmlLoss
from embedlab.losses.proxy_anchor import ProxyAnchorLoss
from embedlab.losses.supcon import SupConLoss
from embedlab.losses.triplet import TripletLossWithMiner

__all__ = [
    "ArcFaceLoss",
    "ContrastiveLoss",
    "CrossBatchMemory",
    "MultiSimilarityLoss",
    "PairLoss",
    "PmlLoss",
    "ProxyAnchorLoss",
    "SubCenterArcFaceLoss",
    "SupConLoss",
    "TripletLossWithMiner",
]
