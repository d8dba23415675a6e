"""Lightning edge: the training module and the validation-metrics callback."""

from embedlab.lightning.callbacks import MetricValCallback
from embedlab.lightning.module import ExtractorModule

__all__ = ["ExtractorModule", "MetricValCallback"]
