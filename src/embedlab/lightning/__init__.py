"""Lightning edge: the training module, its callbacks and crash-safe checkpoint IO."""

from embedlab.lightning.callbacks import (
    EmbeddingCollector,
    EpochLossCallback,
    EpochSeedCallback,
    MetricValCallback,
)
from embedlab.lightning.checkpoint import AtomicCheckpointIO, ResumeState
from embedlab.lightning.finetune import Finetuning
from embedlab.lightning.module import ExtractorModule

__all__ = [
    "AtomicCheckpointIO",
    "EmbeddingCollector",
    "EpochLossCallback",
    "EpochSeedCallback",
    "ExtractorModule",
    "Finetuning",
    "MetricValCallback",
    "ResumeState",
]
