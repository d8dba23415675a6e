"""Re-ranking of kNN results: average query expansion (``aqe``).

Post-processing is chosen by name (``validate.postprocess``); its metrics are reported
beside the plain ones under ``"<name>/<metric>"`` keys (``OVERALL["aqe/cmc"][1]``).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from embedlab.errors import EmbedlabError

__all__ = ["POSTPROCESSORS", "expand_queries"]

#: Names accepted by ``validate.postprocess`` / ``EmbeddingMetrics(postprocess=...)``.
POSTPROCESSORS = ("none", "aqe")


def expand_queries(queries: Tensor, gallery: Tensor, neighbours: Tensor, n: int) -> Tensor:
    """Average query expansion: the mean of each query and its ``n`` nearest gallery items.

    The mean is rescaled to the query's own norm ("re-normalised": unit-norm embeddings
    stay unit-norm, and euclidean distances keep their scale). Padding neighbours
    (index ``-1``) are left out of the mean.

    Args:
        queries: ``[Q, D]`` query embeddings.
        gallery: ``[G, D]`` gallery embeddings.
        neighbours: ``[Q, K]`` gallery indices of each query's neighbours, nearest first.
        n: neighbours averaged in (``<= K``).

    Example:
        >>> import torch
        >>> q = torch.tensor([[1.0, 0.0]])
        >>> g = torch.tensor([[0.0, 1.0], [5.0, 5.0]])
        >>> expand_queries(q, g, torch.tensor([[0, 1]]), n=1)
        tensor([[0.7071, 0.7071]])
    """
    if n < 0 or n > neighbours.shape[1]:
        raise EmbedlabError(f"aqe_k must be in [0, {neighbours.shape[1]}], got {n}")
    top = neighbours[:, :n]
    found = (top >= 0).to(queries.dtype)
    summed = queries + (gallery[top.clamp(min=0)] * found.unsqueeze(2)).sum(dim=1)
    mean = summed / (1 + found.sum(dim=1, keepdim=True))
    return F.normalize(mean, dim=1) * queries.norm(dim=1, keepdim=True)
