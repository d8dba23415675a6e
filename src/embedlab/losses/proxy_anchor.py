"""Proxy-Anchor loss (Kim et al., CVPR 2020), PML's ``ProxyAnchorLoss``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from embedlab.errors import EmbedlabError
from embedlab.losses.arcface import check_class_labels
from embedlab.losses.multi_similarity import cosine_similarity_matrix
from embedlab.losses.pair_base import check_embeddings, masked_logsumexp, zero_loss


class ProxyAnchorLoss(nn.Module):
    """Each class proxy is an anchor: pull its class's embeddings in, push the others out.

    With cosines ``s`` between embeddings and the ``proxies`` (one row per class):
    ``1/|P+| sum_{c in P+} log(1 + sum_{x in c} exp(-alpha (s_xc - margin)))
    + 1/C sum_c log(1 + sum_{x not in c} exp(alpha (s_xc + margin)))``, ``P+`` the classes
    present in the batch (PML's ``DivisorReducer``).

    ``last_logs``: ``pos_sim`` (mean cosine to the own proxy), ``neg_sim`` (to the other
    proxies), ``pos_loss``, ``neg_loss`` (the two terms).

    Args:
        num_classes: classes of the training set; labels are ``0 .. num_classes - 1``.
        embedding_size: width of the embeddings.
        margin: the margin ``delta``.
        alpha: the scale ``alpha``.

    Example:
        >>> criterion = ProxyAnchorLoss(num_classes=2, embedding_size=2, margin=0.0, alpha=1.0)
        >>> _ = criterion.proxies.data.copy_(torch.eye(2))
        >>> x = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
        >>> round(criterion(x, torch.tensor([0, 1])).item(), 4)  # log(1 + 1/e) + log(2)
        1.0064
    """

    def __init__(
        self, num_classes: int, embedding_size: int, margin: float = 0.1, alpha: float = 32.0
    ) -> None:
        super().__init__()
        if num_classes < 1 or embedding_size < 1:
            raise EmbedlabError(
                f"ProxyAnchorLoss: num_classes and embedding_size must be >= 1, got "
                f"{num_classes} and {embedding_size}"
            )
        if alpha <= 0:
            raise EmbedlabError(f"ProxyAnchorLoss: alpha must be > 0, got {alpha}")
        self.num_classes = int(num_classes)
        self.embedding_size = int(embedding_size)
        self.margin = float(margin)
        self.alpha = float(alpha)
        self.proxies = nn.Parameter(torch.empty(num_classes, embedding_size))
        nn.init.kaiming_normal_(self.proxies, mode="fan_out")  # PML's (and the paper's) init
        self.last_logs: dict[str, float] = {}

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, embedding_size={self.embedding_size}, "
            f"margin={self.margin}, alpha={self.alpha}"
        )

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Proxy-Anchor loss of ``embeddings [B, embedding_size]`` with class ``labels [B]``."""
        labels = check_embeddings(embeddings, labels, "ProxyAnchorLoss")
        check_class_labels(labels, self.num_classes, "ProxyAnchorLoss")
        cos = cosine_similarity_matrix(embeddings, self.proxies.to(embeddings.dtype))
        pos_mask = F.one_hot(labels, self.num_classes).bool()
        with_pos = int(pos_mask.any(dim=0).sum())
        pos_term = masked_logsumexp(self.alpha * (self.margin - cos), pos_mask, True, dim=0)
        neg_term = masked_logsumexp(self.alpha * (cos + self.margin), ~pos_mask, True, dim=0)
        pos_loss = pos_term.sum() / with_pos if with_pos else zero_loss(embeddings)
        neg_loss = neg_term.sum() / self.num_classes
        with torch.no_grad():
            n_neg = (~pos_mask).sum().clamp(min=1)
            stats = torch.stack(
                [cos[pos_mask].mean(), cos[~pos_mask].sum() / n_neg, pos_loss, neg_loss]
            ).tolist()
        self.last_logs = dict(
            zip(("pos_sim", "neg_sim", "pos_loss", "neg_loss"), stats, strict=True)
        )
        return pos_loss + neg_loss
