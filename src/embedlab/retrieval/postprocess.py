"""Post-processors: each takes a :class:`RetrievalResults` and returns a re-ranked one.

``validate.postprocess`` lists them by name, applied in order; validate reports the
metrics after each step beside the plain ones, under ``<steps>/<metric>``
(``aqe/cmc@1``, then ``aqe+k_reciprocal/cmc@1``). A learned re-ranker plugs into the
same slot: any object with a ``name``, the ``candidates`` it needs per query and
``__call__(results) -> results``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from embedlab.errors import EmbedlabError
from embedlab.retrieval.knn import knn
from embedlab.retrieval.rerank import expand_queries, k_reciprocal_distances
from embedlab.retrieval.results import RetrievalResults

__all__ = [
    "POSTPROCESSORS",
    "AverageQueryExpansion",
    "KReciprocalReranking",
    "PostProcessor",
    "apply_postprocessors",
    "build_postprocessors",
]


class PostProcessor(Protocol):
    """What the post-processing slot takes."""

    name: str
    candidates: int
    """Neighbours per query the input results must hold (search keeps at least these)."""

    def __call__(self, results: RetrievalResults) -> RetrievalResults: ...


@dataclass(frozen=True)
class AverageQueryExpansion:
    """Average query expansion: each query is replaced by the mean of itself and its ``k``
    nearest gallery items (re-normalised to its own norm), then searched again.

    >>> from embedlab.retrieval.query_gallery import QueryGallery
    >>> from embedlab.retrieval.results import retrieve
    >>> qg = QueryGallery.from_columns(torch.tensor([[0.0], [1.0], [1.1], [3.0]]), [0, 1, 1, 0])
    >>> AverageQueryExpansion(k=1)(retrieve(qg, k=2)).retrieved.tolist()
    [[1, 2], [2, 0], [1, 0], [2, 1]]
    """

    k: int = 2
    name: str = "aqe"

    def __post_init__(self) -> None:
        if self.k < 0:
            raise EmbedlabError(f"aqe_k must be >= 0, got {self.k}")

    @property
    def candidates(self) -> int:
        return max(self.k, 1)

    def __call__(self, results: RetrievalResults) -> RetrievalResults:
        qg = results.query_gallery
        query_pos, gallery_pos = results.query_positions, results.gallery_positions
        expanded = expand_queries(
            qg.embeddings[query_pos], qg.embeddings, results.retrieved, min(self.k, results.width)
        )
        distances, local = knn(
            expanded, qg.rows(gallery_pos), results.width, **results.search_options()
        )
        retrieved = torch.where(local >= 0, gallery_pos[local.clamp(min=0)], -1)
        return results.with_ranking(distances, retrieved)


@dataclass(frozen=True)
class KReciprocalReranking:
    """k-reciprocal re-ranking (Zhong et al. 2017) of each query's first ``top_k`` neighbours.

    Distances become the re-ranking distances of
    :func:`~embedlab.retrieval.rerank.k_reciprocal_distances` (ties by position).

    >>> from embedlab.retrieval.query_gallery import QueryGallery
    >>> from embedlab.retrieval.results import retrieve
    >>> qg = QueryGallery.from_columns(torch.tensor([[0.0], [0.1], [1.0], [1.1]]), [0, 0, 1, 1])
    >>> KReciprocalReranking(k1=1, k2=1, top_k=3)(retrieve(qg, k=3)).retrieved[0].tolist()
    [1, 2, 3]
    """

    k1: int = 20
    k2: int = 6
    lambda_value: float = 0.3
    top_k: int = 100
    name: str = "k_reciprocal"

    def __post_init__(self) -> None:
        if self.k1 < 1 or self.k2 < 1 or not 0.0 <= self.lambda_value <= 1.0 or self.top_k < 1:
            raise EmbedlabError(
                "k_reciprocal needs k1, k2, rerank_top_k >= 1 and lambda_value in [0, 1], got "
                f"k1={self.k1}, k2={self.k2}, lambda_value={self.lambda_value}, "
                f"rerank_top_k={self.top_k}"
            )

    @property
    def candidates(self) -> int:
        return self.top_k

    def __call__(self, results: RetrievalResults) -> RetrievalResults:
        qg = results.query_gallery
        query_pos, gallery_pos = results.query_positions, results.gallery_positions
        items = torch.unique(torch.cat([query_pos, gallery_pos]))
        number = torch.full((len(qg),), -1, dtype=torch.int64)
        number[items] = torch.arange(items.numel())
        retrieved = results.retrieved
        found = retrieved >= 0
        final = k_reciprocal_distances(
            qg.rows(items),
            number[query_pos],
            torch.where(found, number[retrieved.clamp(min=0)], -1),
            k1=self.k1,
            k2=self.k2,
            lambda_value=self.lambda_value,
            metric=results.metric,
            chunk_size=results.chunk_size,
        )
        # Ties by position, as everywhere: sort by position, then stably by distance.
        padded = torch.where(found, retrieved, len(qg))
        by_position = torch.sort(padded, dim=1).indices
        final = torch.gather(final, 1, by_position)
        order = final.sort(dim=1, stable=True).indices
        columns = torch.gather(by_position, 1, order)
        distances = torch.gather(final, 1, order).to(torch.float32)
        return results.with_ranking(distances, torch.gather(retrieved, 1, columns))


POSTPROCESSORS = {"aqe": AverageQueryExpansion, "k_reciprocal": KReciprocalReranking}
"""Names accepted by ``validate.postprocess``."""


def build_postprocessors(names: Sequence[str], **options: Any) -> list[PostProcessor]:
    """Post-processors by name, with the ``validate.*`` options they take.

    Options: ``aqe_k`` (aqe); ``k1``, ``k2``, ``lambda_value``, ``rerank_top_k``
    (k_reciprocal). ``"none"`` is skipped.

    >>> [p.name for p in build_postprocessors(["aqe", "k_reciprocal"], aqe_k=3, k1=5)]
    ['aqe', 'k_reciprocal']
    """
    out: list[PostProcessor] = []
    for name in names:
        if name == "none":
            continue
        if name == "aqe":
            out.append(AverageQueryExpansion(k=options.get("aqe_k", 2)))
        elif name == "k_reciprocal":
            out.append(
                KReciprocalReranking(
                    k1=options.get("k1", 20),
                    k2=options.get("k2", 6),
                    lambda_value=options.get("lambda_value", 0.3),
                    top_k=options.get("rerank_top_k", 100),
                )
            )
        else:
            raise EmbedlabError(
                f"postprocess: unknown name {name!r} (choose from {sorted(POSTPROCESSORS)})"
            )
    return out


def apply_postprocessors(
    results: RetrievalResults, postprocessors: Sequence[PostProcessor]
) -> dict[str, RetrievalResults]:
    """Apply them in order; the results after each step, keyed by the steps so far.

    >>> from embedlab.retrieval.query_gallery import QueryGallery
    >>> from embedlab.retrieval.results import retrieve
    >>> qg = QueryGallery.from_columns(torch.eye(4), [0, 0, 1, 1])
    >>> list(apply_postprocessors(retrieve(qg, k=3), build_postprocessors(["aqe", "aqe"])))
    ['aqe', 'aqe+aqe']
    """
    out: dict[str, RetrievalResults] = {}
    steps: list[str] = []
    for step in postprocessors:
        results = step(results)
        steps.append(step.name)
        out["+".join(steps)] = results
    return out
