"""The arithmetic of re-ranking: average query expansion and k-reciprocal distances (Zhong 2017).

:mod:`embedlab.retrieval.postprocess` wraps them as post-processors of a
:class:`~embedlab.retrieval.results.RetrievalResults`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from embedlab.errors import EmbedlabError
from embedlab.retrieval.distance import auto_chunk_size, pairwise_dist
from embedlab.retrieval.knn import knn

__all__ = ["expand_queries", "k_reciprocal_distances"]


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


def _sq_distances(x: Tensor, a: Tensor, b: Tensor, metric: str) -> Tensor:
    """Base distance of pairs ``(a[t], b[t])``: squared euclidean (as Zhong et al.) or 1 - cos."""
    if metric == "cosine":
        return pairwise_dist(x[a], x[b], "cosine", paired=True).to(torch.float64)
    return pairwise_dist(x[a], x[b], paired=True, squared=True).to(torch.float64)


def k_reciprocal_distances(
    items: Tensor,
    queries: Tensor,
    candidates: Tensor,
    *,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    metric: str = "euclidean",
    chunk_size: int | None = None,
) -> Tensor:
    """k-reciprocal re-ranking distances (Zhong et al. 2017) of each query's candidates.

    Exact on the candidate sets, never ``N x N``: the k-reciprocal neighbourhoods come from
    one kNN pass over all items (``k1 + 1`` neighbours, the item itself included, as in the
    reference code), the per-row normalisation from one max-distance pass, and the
    Jaccard distance from sparse neighbourhood vectors ``V``. With ``d`` the base distance
    (squared euclidean, or ``1 - cos``) divided by its row maximum,

    ``final(q, g) = (1 - lambda) * jaccard(V_q, V_g) + lambda * d(q, g)``.

    Args:
        items: ``[N, D]`` embeddings of every item taking part (queries and gallery).
        queries: ``[Q]`` item numbers of the queries.
        candidates: ``[Q, C]`` item numbers of each query's candidates (``-1`` = padding).
        k1, k2, lambda_value: the method's parameters.
        metric: ``"euclidean"`` or ``"cosine"``.
        chunk_size: rows per block of the kNN and max passes.

    Returns:
        ``[Q, C]`` float64 re-ranking distances (inf for padding).

    Example:
        >>> x = torch.tensor([[0.0], [0.1], [1.0], [1.1]])
        >>> d = k_reciprocal_distances(x, torch.tensor([0]), torch.tensor([[1, 2, 3]]),
        ...                            k1=1, k2=1, lambda_value=0.0)
        >>> [round(v, 3) for v in d[0].tolist()]  # item 1 shares item 0's neighbourhood
        [0.009, 1.0, 1.0]
    """
    n = items.shape[0]
    x = items.detach().to(torch.float32)
    width = min(k1 + 1, n)
    _, rank = knn(x, x, width, metric=metric, chunk_size=chunk_size, symmetric=False)
    rows = chunk_size or auto_chunk_size(n)
    row_max = torch.cat(
        [
            pairwise_dist(x[s : s + rows], x, metric, squared=True).amax(dim=1)
            for s in range(0, n, rows)
        ]
    ).to(torch.float64)
    everyone = torch.arange(n)

    def reciprocal(k: int) -> tuple[Tensor, Tensor]:
        top = rank[:, : k + 1]
        return top, (top[top] == everyone.view(-1, 1, 1)).any(dim=2)

    forward, is_recip = reciprocal(k1)
    half_top, half_recip = reciprocal(round(k1 / 2))
    # For each item i and reciprocal candidate c: c's own half-size reciprocal set H_c,
    # and how much of it lies in i's reciprocal set.
    h_sets = half_top[forward]  # [N, k1+1, kh+1]
    h_valid = half_recip[forward] & is_recip.unsqueeze(2)
    recip_items = torch.where(is_recip, forward, -1)  # [N, k1+1]
    inside = (h_sets.unsqueeze(3) == recip_items.view(n, 1, 1, -1)).any(dim=3) & h_valid
    qualifies = is_recip & (inside.sum(2) > 2 / 3 * h_valid.sum(2))
    keep_h = h_valid & qualifies.unsqueeze(2)
    pair_rows = torch.cat(
        [
            everyone.view(-1, 1).expand_as(forward)[is_recip],
            everyone.view(-1, 1, 1).expand_as(h_sets)[keep_h],
        ]
    )
    pair_cols = torch.cat([forward[is_recip], h_sets[keep_h]])
    keys = torch.unique(pair_rows * n + pair_cols)
    v_rows, v_cols = keys // n, keys % n
    weights = torch.exp(-_sq_distances(x, v_rows, v_cols, metric) / row_max[v_rows])
    weights = weights / torch.zeros(n, dtype=torch.float64).index_add_(0, v_rows, weights)[v_rows]
    v = torch.sparse_coo_tensor(
        torch.stack([v_rows, v_cols]), weights, (n, n), check_invariants=False
    ).coalesce()
    if k2 != 1:
        expand_rows = everyone.repeat_interleave(min(k2, width))
        expand_cols = rank[:, : min(k2, width)].reshape(-1)
        averaging = torch.sparse_coo_tensor(
            torch.stack([expand_rows, expand_cols]),
            torch.full((expand_rows.numel(),), 1.0 / min(k2, width), dtype=torch.float64),
            (n, n),
            check_invariants=False,  # valid by construction
        ).coalesce()
        v = torch.sparse.mm(averaging, v).coalesce()
    v_rows, v_cols = v.indices()
    v_values = v.values()
    nz = v_values != 0
    v_rows, v_cols, v_values = v_rows[nz], v_cols[nz], v_values[nz]
    v_keys = v_rows * n + v_cols  # sorted: coalesced COO is row-major
    row_start = torch.searchsorted(v_rows, everyone)
    row_count = torch.bincount(v_rows, minlength=n)

    found = candidates >= 0
    q_items = queries.view(-1, 1).expand_as(candidates)[found]
    g_items = candidates[found]
    # Sum of min(V_q, V_g) over the support of V_q, looked up in V_g.
    counts = row_count[q_items]
    pair = torch.repeat_interleave(torch.arange(q_items.numel()), counts)
    offset = torch.arange(int(counts.sum())) - torch.repeat_interleave(
        torch.cumsum(counts, 0) - counts, counts
    )
    entry = row_start[q_items][pair] + offset
    wanted = g_items[pair] * n + v_cols[entry]
    at = torch.searchsorted(v_keys, wanted).clamp(max=max(v_keys.numel() - 1, 0))
    other = torch.where(v_keys[at] == wanted, v_values[at], torch.zeros_like(v_values[at]))
    overlap = torch.zeros(q_items.numel(), dtype=torch.float64).index_add_(
        0, pair, torch.minimum(v_values[entry], other)
    )
    jaccard = 1 - overlap / (2 - overlap)
    original = _sq_distances(x, q_items, g_items, metric) / row_max[q_items]
    out = torch.full(candidates.shape, float("inf"), dtype=torch.float64)
    out[found] = (1 - lambda_value) * jaccard + lambda_value * original
    return out
