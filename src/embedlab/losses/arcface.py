"""ArcFace (Deng et al., CVPR 2019) and sub-center ArcFace (Deng et al., ECCV 2020).

PML's ``ArcFaceLoss`` and ``SubCenterArcFaceLoss``: same arguments (the margin in
degrees), same class matrix ``W`` of shape ``[embedding_size, num_classes]`` (sub-center:
``num_classes * sub_centers`` columns, the ``sub_centers`` of class ``c`` being columns
``c * sub_centers ...``), same initialisation and mean over the batch, so weights copy
between the two implementations.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from embedlab.errors import EmbedlabError
from embedlab.losses.multi_similarity import cosine_similarity_matrix
from embedlab.losses.pair_base import check_embeddings


def check_class_labels(labels: Tensor, num_classes: int, where: str) -> None:
    """Class-weight losses index their weights by label: labels must lie in ``[0, C)``."""
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise EmbedlabError(
            f"{where}: labels must be class indices in [0, {num_classes}), got "
            f"{int(labels.min())}..{int(labels.max())}"
        )


class ArcFaceLoss(nn.Module):
    """Softmax cross-entropy on ``scale * cos``, the target class's angle widened by ``margin``.

    The logit of the true class is ``cos(theta + m)`` (``cos(theta) - m sin(m)`` past
    ``180 deg - m``, to stay monotonic), the others ``cos(theta_j)``, all times ``scale``;
    ``theta_j`` is the angle between the embedding and column ``j`` of ``W``.

    ``last_logs``: ``avg_angle`` (PML's statistic: mean angle to the true class, degrees),
    ``accuracy`` (share of the batch whose nearest class is its own).

    Args:
        num_classes: classes of the training set; labels are ``0 .. num_classes - 1``.
        embedding_size: width of the embeddings.
        margin: additive angular margin, in degrees (PML's unit).
        scale: logit scale ``s``.

    Example:
        >>> criterion = ArcFaceLoss(num_classes=2, embedding_size=2, margin=0.0, scale=1.0)
        >>> _ = criterion.W.data.copy_(torch.eye(2))
        >>> x = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
        >>> round(criterion(x, torch.tensor([0, 1])).item(), 4)  # -log(e / (e + 1))
        0.3133
        >>> criterion.last_logs
        {'avg_angle': 0.0, 'accuracy': 1.0}
    """

    def __init__(
        self, num_classes: int, embedding_size: int, margin: float = 28.6, scale: float = 64.0
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if num_classes < 1 or embedding_size < 1:
            raise EmbedlabError(
                f"{name}: num_classes and embedding_size must be >= 1, got {num_classes} "
                f"and {embedding_size}"
            )
        if not 0 <= margin < 180 or scale <= 0:
            raise EmbedlabError(
                f"{name}: margin must be in [0, 180) degrees and scale > 0, got {margin}, {scale}"
            )
        self.num_classes = int(num_classes)
        self.embedding_size = int(embedding_size)
        self.margin = float(margin)
        self.scale = float(scale)
        self.W = nn.Parameter(torch.empty(embedding_size, self._columns()))
        nn.init.normal_(self.W)  # PML's default weight_init_func
        self.last_logs: dict[str, float] = {}

    def _columns(self) -> int:
        return self.num_classes

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, embedding_size={self.embedding_size}, "
            f"margin={self.margin}, scale={self.scale}"
        )

    def class_cosines(self, embeddings: Tensor) -> Tensor:
        """``[B, num_classes]`` cosine of every embedding with every class."""
        return cosine_similarity_matrix(embeddings, self.W.t().to(embeddings.dtype))

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Mean ArcFace loss of ``embeddings [B, embedding_size]`` with class ``labels [B]``."""
        name = type(self).__name__
        labels = check_embeddings(embeddings, labels, name)
        check_class_labels(labels, self.num_classes, name)
        cosine = self.class_cosines(embeddings)
        target = F.one_hot(labels, self.num_classes).to(cosine.dtype)
        target_cos = cosine[target == 1]
        angles = torch.acos(torch.clamp(target_cos, -1, 1))
        margin = math.radians(self.margin)
        widened = torch.where(
            angles <= math.pi - margin,
            torch.cos(angles + margin),
            torch.cos(angles) - margin * math.sin(margin),
        )
        logits = (cosine + target * (widened - target_cos).unsqueeze(1)) * self.scale
        loss = F.cross_entropy(logits, labels, reduction="none").mean()
        with torch.no_grad():
            stats = torch.stack(
                [torch.rad2deg(angles.mean()), (cosine.argmax(dim=1) == labels).to(cosine).mean()]
            ).tolist()
        self.last_logs = {"avg_angle": stats[0], "accuracy": stats[1]}
        return loss


class SubCenterArcFaceLoss(ArcFaceLoss):
    """ArcFace with ``sub_centers`` weight vectors per class; a class's cosine is its best one.

    Robust to label noise and to classes with several modes (Deng et al., ECCV 2020).
    ``W`` has ``num_classes * sub_centers`` columns (PML's layout).

    Example:
        >>> criterion = SubCenterArcFaceLoss(num_classes=3, embedding_size=4, sub_centers=2)
        >>> tuple(criterion.W.shape)
        (4, 6)
        >>> criterion.class_cosines(torch.randn(5, 4)).shape
        torch.Size([5, 3])
    """

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        margin: float = 28.6,
        scale: float = 64.0,
        sub_centers: int = 3,
    ) -> None:
        if sub_centers < 1:
            raise EmbedlabError(
                f"SubCenterArcFaceLoss: sub_centers must be >= 1, got {sub_centers}"
            )
        self.sub_centers = int(sub_centers)
        super().__init__(num_classes, embedding_size, margin=margin, scale=scale)

    def _columns(self) -> int:
        return self.num_classes * self.sub_centers

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, sub_centers={self.sub_centers}"

    def class_cosines(self, embeddings: Tensor) -> Tensor:
        cosine = super().class_cosines(embeddings)
        return cosine.view(-1, self.num_classes, self.sub_centers).max(dim=2).values
