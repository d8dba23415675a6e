"""`RetrievalResults`: each query's top-k gallery items, what every report reads.

OML's name and role. Built once by :func:`retrieve` (exact chunked kNN, symmetric when
the queries are the gallery, never the full ``Q x G`` matrix); post-processors
(:mod:`embedlab.retrieval.postprocess`) take one and return a re-ranked one; scoring
(:mod:`embedlab.metrics.scoring`), the reports, compare and the image grids read it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from embedlab.errors import EmbedlabError
from embedlab.retrieval.distance import Metric, check_metric
from embedlab.retrieval.knn import knn
from embedlab.retrieval.query_gallery import QueryGallery
from embedlab.retrieval.ranks import relevant_ranks

__all__ = ["RetrievalResults", "count_matches", "count_relevant", "retrieve"]


@dataclass(frozen=True, eq=False)
class RetrievalResults:
    """The nearest admissible gallery items of every query, nearest first.

    Positions (``query_positions``, ``retrieved``) are rows of :attr:`query_gallery`.
    The query itself and items of its sequence are never retrieved.

    Attributes:
        query_gallery: the items searched.
        query_positions: ``[Q]`` the queries, ascending.
        distances: ``[Q, K]`` float32, ascending per row; ``inf`` pads rows with fewer
            than K admissible items.
        retrieved: ``[Q, K]`` int64 positions of the retrieved items (``-1`` = padding);
            ties are ordered by position.
        relevance: ``[Q, K]`` bool, the retrieved item has the query's label.
        n_relevant: ``[Q]`` admissible relevant gallery items of each query (R).
        metric: the distance (``euclidean`` or ``cosine``).
        chunk_size: query rows per search block (None: from a 256 MiB budget).
        relevant_ranks: ``[Q, R_max]`` int64 or None: the 1-based rank of every relevant
            item in the query's full ranking, ascending, zero-padded (what ``map@all``
            and ``mrr`` read; :func:`retrieve` with ``full_ranking``). A new ranking
            (:meth:`with_ranking`) has none: a post-processor orders only its head.

    Example:
        >>> qg = QueryGallery.from_columns(torch.tensor([[0.0], [1.0], [3.0]]), [0, 0, 1])
        >>> r = retrieve(qg, k=2)
        >>> r.retrieved.tolist(), r.relevance.tolist(), r.n_relevant.tolist()
        ([[1, 2], [0, 2], [1, 0]], [[True, False], [True, False], [False, False]], [1, 1, 0])
        >>> r.valid_queries.tolist(), r.top(1).retrieved.tolist()
        ([True, True, False], [[1], [0], [1]])
    """

    query_gallery: QueryGallery
    query_positions: Tensor
    distances: Tensor
    retrieved: Tensor
    relevance: Tensor
    n_relevant: Tensor
    metric: Metric = "euclidean"
    chunk_size: int | None = None
    relevant_ranks: Tensor | None = None

    @property
    def gallery_positions(self) -> Tensor:
        """``[G]`` positions of the gallery items, ascending."""
        return self.query_gallery.gallery_positions

    @property
    def valid_queries(self) -> Tensor:
        """``[Q]`` bool: queries with at least one relevant gallery item (they are scored)."""
        return self.n_relevant > 0

    @property
    def width(self) -> int:
        """K, the number of neighbours kept per query."""
        return int(self.retrieved.shape[1])

    def __len__(self) -> int:
        return int(self.query_positions.shape[0])

    def search_options(self) -> dict[str, Any]:
        """The keywords that search this query/gallery split again with the same distance,
        chunking and exclusions (the query itself, its sequence): for
        :func:`~embedlab.retrieval.knn.knn` and the other chunked passes over its pairs.

        Example:
            >>> qg = QueryGallery.from_columns(torch.tensor([[0.0], [1.0]]), [0, 0])
            >>> sorted(retrieve(qg, k=1).search_options())  # doctest: +NORMALIZE_WHITESPACE
            ['chunk_size', 'gallery_ids', 'gallery_sequence', 'metric', 'query_ids',
             'query_sequence']
        """
        return _search_options(
            self.query_gallery, self.query_positions, self.metric, self.chunk_size
        )

    def pair_inputs(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(queries, gallery, query_labels, gallery_labels)``: the embeddings and labels
        of the two sides, the leading arguments of the chunked pair passes."""
        qg = self.query_gallery
        query_pos, gallery_pos = self.query_positions, self.gallery_positions
        return (
            qg.rows(query_pos),
            qg.rows(gallery_pos),
            qg.labels[query_pos],
            qg.labels[gallery_pos],
        )

    def top(self, k: int) -> RetrievalResults:
        """The same results cut to the first ``k`` neighbours (no copy)."""
        return replace(
            self,
            distances=self.distances[:, :k],
            retrieved=self.retrieved[:, :k],
            relevance=self.relevance[:, :k],
        )

    def with_ranking(self, distances: Tensor, retrieved: Tensor) -> RetrievalResults:
        """New results for a new ranking of the same queries (what post-processors return).

        ``distances`` must be ascending per row, padding (``-1``) last. The full-ranking
        ranks are dropped: the new order of the gallery beyond the head is not known.
        """
        if distances.shape != retrieved.shape or distances.shape[0] != len(self):
            raise EmbedlabError(
                f"with_ranking: expected [{len(self)}, K] distances and positions, got "
                f"{tuple(distances.shape)} and {tuple(retrieved.shape)}"
            )
        labels = self.query_gallery.labels
        found = retrieved >= 0
        relevance = found & (labels[retrieved.clamp(min=0)] == labels[self.query_positions, None])
        return replace(
            self,
            distances=distances,
            retrieved=retrieved,
            relevance=relevance,
            relevant_ranks=None,
        )

    def relevant_gallery(self, query_number: int) -> tuple[Tensor, Tensor]:
        """All admissible relevant gallery items of one query, nearest first.

        Args:
            query_number: position among the queries (``0 <= query_number < Q``).

        Returns:
            ``(positions, distances)`` sorted by distance then position.

        Example:
            >>> qg = QueryGallery.from_columns(torch.tensor([[0.0], [5.0], [1.0], [2.0]]),
            ...                                [0, 0, 0, 1])
            >>> retrieve(qg, k=1).relevant_gallery(0)
            (tensor([2, 1]), tensor([1., 5.]))
        """
        if not 0 <= query_number < len(self):
            raise EmbedlabError(f"query number {query_number} is out of range [0, {len(self)})")
        qg = self.query_gallery
        query = int(self.query_positions[query_number])
        gallery = self.gallery_positions
        candidates = gallery[qg.labels[gallery] == qg.labels[query]]
        if candidates.numel() == 0:
            return candidates, torch.zeros(0)
        distances, local = knn(
            qg.embeddings[query : query + 1],
            qg.embeddings[candidates],
            candidates.numel(),
            metric=self.metric,
            query_ids=torch.tensor([query]),
            gallery_ids=candidates,
            query_sequence=qg.sequence[query : query + 1],
            gallery_sequence=qg.sequence[candidates],
        )
        found = local[0] >= 0
        return candidates[local[0][found]], distances[0][found]


def _search_options(
    qg: QueryGallery, query_pos: Tensor, metric: Metric, chunk_size: int | None
) -> dict[str, Any]:
    gallery_pos = qg.gallery_positions
    return {
        "metric": metric,
        "chunk_size": chunk_size,
        "query_ids": query_pos,
        "gallery_ids": gallery_pos,
        "query_sequence": qg.sequence[query_pos],
        "gallery_sequence": qg.sequence[gallery_pos],
    }


def retrieve(
    query_gallery: QueryGallery,
    k: int,
    *,
    metric: Metric = "euclidean",
    chunk_size: int | None = None,
    at_least_r: bool = False,
    full_ranking: bool = False,
    progress: bool = False,
) -> RetrievalResults:
    """Search every query's ``k`` nearest admissible gallery items (exact, chunked).

    Args:
        query_gallery: the items.
        k: neighbours per query (``>= 1``; may exceed the gallery, the rest is padding).
        metric: ``"euclidean"`` or ``"cosine"``.
        chunk_size: query rows per block (tile side on the symmetric path).
        at_least_r: keep ``max(k, R)`` neighbours, R the largest ``n_relevant``: what
            MAP@R and R-precision read.
        full_ranking: also the rank of every relevant item in the full ranking
            (:attr:`RetrievalResults.relevant_ranks`, what ``map@all`` and ``mrr`` read):
            one more chunked pass over the gallery
            (:func:`~embedlab.retrieval.ranks.relevant_ranks`).
        progress: a progress bar over the chunks.
    """
    check_metric(metric, "retrieve")
    if k < 1:
        raise EmbedlabError(f"retrieve: k must be >= 1, got {k}")
    qg = query_gallery
    query_pos, gallery_pos = qg.query_positions, qg.gallery_positions
    query_labels, gallery_labels = qg.labels[query_pos], qg.labels[gallery_pos]
    options = _search_options(qg, query_pos, metric, chunk_size)
    n_relevant = count_relevant(
        query_labels, gallery_labels, query_pos, gallery_pos,
        options["query_sequence"], options["gallery_sequence"],
    )  # fmt: skip
    width = max(k, int(n_relevant.max())) if at_least_r and n_relevant.numel() else k
    queries, gallery = qg.rows(query_pos), qg.rows(gallery_pos)
    distances, local = knn(queries, gallery, width, progress=progress, **options)
    found = local >= 0
    retrieved = torch.where(found, gallery_pos[local.clamp(min=0)], -1)
    relevance = found & (gallery_labels[local.clamp(min=0)] == query_labels.unsqueeze(1))
    ranks = None
    if full_ranking:
        ranks = relevant_ranks(
            queries, gallery, query_labels, gallery_labels, local, n_relevant, **options
        )
    return RetrievalResults(
        qg, query_pos, distances, retrieved, relevance, n_relevant, metric, chunk_size, ranks
    )


def count_matches(query_keys: Tensor, gallery_keys: Tensor) -> Tensor:
    """For each query key row, how many gallery rows carry the same key (a group-by).

    Example:
        >>> count_matches(torch.tensor([[1, 0], [2, 2]]), torch.tensor([[1, 0], [1, 0], [2, 3]]))
        tensor([2, 0])
    """
    n_gallery = gallery_keys.shape[0]
    _, inverse = torch.unique(torch.cat([gallery_keys, query_keys]), dim=0, return_inverse=True)
    n_groups = int(inverse.max()) + 1 if inverse.numel() else 0
    counts = torch.bincount(inverse[:n_gallery], minlength=n_groups)
    return counts[inverse[n_gallery:]]


def count_relevant(
    query_labels: Tensor,
    gallery_labels: Tensor,
    query_ids: Tensor | None = None,
    gallery_ids: Tensor | None = None,
    query_sequence: Tensor | None = None,
    gallery_sequence: Tensor | None = None,
) -> Tensor:
    """Number of admissible gallery items with the query's label, by group-by counting.

    Not admissible: gallery items with the query's id (itself) and items sharing the
    query's sequence code (``>= 0``; ``-1`` = no sequence). By inclusion-exclusion,

    .. math:: n = |L| - |L \\cap I| - |L \\cap S| + |L \\cap I \\cap S|

    where L, I, S are the gallery items with the query's label, id and sequence. Each
    term is a count over a sorted group key, so the cost is ``O((Q + G) log(Q + G))``,
    never ``Q x G``.

    Example:
        >>> labels = torch.tensor([0, 0, 0, 1])
        >>> ids = torch.arange(4)
        >>> seq = torch.tensor([5, 5, -1, -1])
        >>> count_relevant(labels, labels, ids, ids, seq, seq)
        tensor([1, 1, 2, 0])
    """
    query_labels = query_labels.to(torch.int64).view(-1, 1)
    gallery_labels = gallery_labels.to(torch.int64).view(-1, 1)
    n_rel = count_matches(query_labels, gallery_labels)
    use_ids = query_ids is not None and gallery_ids is not None
    use_seq = query_sequence is not None and gallery_sequence is not None
    if use_ids:
        assert query_ids is not None and gallery_ids is not None
        q_id = torch.cat([query_labels, query_ids.to(torch.int64).view(-1, 1)], dim=1)
        g_id = torch.cat([gallery_labels, gallery_ids.to(torch.int64).view(-1, 1)], dim=1)
        n_rel -= count_matches(q_id, g_id)
    if use_seq:
        assert query_sequence is not None and gallery_sequence is not None
        q_seq = query_sequence.to(torch.int64).view(-1, 1)
        g_seq = gallery_sequence.to(torch.int64).view(-1, 1)
        has_seq = q_seq.view(-1) >= 0
        same_seq = count_matches(
            torch.cat([query_labels, q_seq], 1), torch.cat([gallery_labels, g_seq], 1)
        )
        if use_ids:
            same_both = count_matches(torch.cat([q_id, q_seq], 1), torch.cat([g_id, g_seq], 1))
            same_seq = same_seq - same_both
        n_rel -= torch.where(has_seq, same_seq, torch.zeros_like(same_seq))
    return n_rel
