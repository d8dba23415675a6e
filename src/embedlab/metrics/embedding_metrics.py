"""`EmbeddingMetrics`: OML's call pattern over the retrieval core.

``setup(num_samples)``, ``update_data(batch)`` per batch, ``compute_metrics()`` once;
results in ``.metrics`` and ``.metrics_unreduced``. The work is done by the pieces it
wires together: the batches become a :class:`~embedlab.retrieval.QueryGallery`,
:func:`~embedlab.retrieval.retrieve` searches it, the post-processors re-rank it and
:func:`~embedlab.metrics.scoring.score` scores it into a
:class:`~embedlab.metrics.table.MetricTable`.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from torch import Tensor

from embedlab.errors import EmbedlabError
from embedlab.metrics.accumulate import BatchColumns
from embedlab.metrics.scoring import MetricOptions, score
from embedlab.metrics.table import MetricTable
from embedlab.retrieval.distance import METRICS
from embedlab.retrieval.postprocess import PostProcessor, apply_postprocessors, build_postprocessors
from embedlab.retrieval.query_gallery import QueryGallery
from embedlab.retrieval.results import RetrievalResults, retrieve

__all__ = ["EmbeddingMetrics"]

logger = logging.getLogger(__name__)

PATHS_KEY = "paths"
"""An extra key of this name becomes the query/gallery value's ``paths``."""


class EmbeddingMetrics:
    """Retrieval metrics over validation embeddings, overall and per category.

    Every item may be a query, a gallery item, or both; the query itself and items of
    its sequence are never retrieved. Queries with no relevant gallery item are left out
    of the averages, counted in ``n_queries_no_relevant`` and reported with a warning.

    Options: the cut-offs and ``pcf_variance`` (OML's names), ``r_metrics`` (``map@R``,
    ``r_precision``), ``ndcg_top_k`` (``ndcg@k``), ``full_ranking_metrics`` (``map@all``
    and ``mrr`` over the full ranking: one more chunked pass), ``fnmr_fmr``
    (``OVERALL["fnmr@fmr"]``), ``postprocess`` (names
    or post-processor objects, applied in order, reported under ``<steps>/<metric>``:
    ``OVERALL["aqe/cmc"][1]``) with ``aqe_k``, ``k1``, ``k2``, ``lambda_value``,
    ``rerank_top_k``.

    After ``compute_metrics``: ``.results`` (the :class:`RetrievalResults`, cut to the
    largest cut-off), ``.table`` (the :class:`MetricTable`), ``.metrics`` and
    ``.metrics_unreduced`` (its two dicts, OML's shapes).

    Example:
        >>> import torch
        >>> metric = EmbeddingMetrics(cmc_top_k=(1,), precision_top_k=(2,), map_top_k=(2,),
        ...                           pcf_variance=(0.5,)).setup(num_samples=4)
        >>> metric.update_data({
        ...     "embeddings": torch.tensor([[0.0, 0.0], [0.1, 0.0], [1.0, 0.0], [1.0, 0.2]]),
        ...     "labels": torch.tensor([0, 0, 1, 2]),
        ...     "is_query": torch.tensor([True, True, True, True]),
        ...     "is_gallery": torch.tensor([True, True, True, True]),
        ... })
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")  # labels 1 and 2 have a single item
        ...     result = metric.compute_metrics()
        >>> result["OVERALL"]  # doctest: +NORMALIZE_WHITESPACE
        {'cmc': {1: 1.0}, 'precision': {2: 1.0}, 'map': {2: 1.0}, 'pcf': {0.5: 0.5},
         'n_queries': 2, 'n_queries_no_relevant': 2}
        >>> metric.results.retrieved[0].tolist(), metric.results.relevance[0].tolist()
        ([1, 2], [True, False])
    """

    def __init__(
        self,
        embeddings_key: str = "embeddings",
        labels_key: str = "labels",
        is_query_key: str = "is_query",
        is_gallery_key: str = "is_gallery",
        categories_key: str = "categories",
        sequence_key: str = "sequence",
        indices_key: str = "idx",
        extra_keys: Sequence[str] = (),
        cmc_top_k: Sequence[int] = (1, 5),
        precision_top_k: Sequence[int] = (5,),
        map_top_k: Sequence[int] = (5,),
        pcf_variance: Sequence[float] = (0.5,),
        distance: str = "euclidean",
        chunk_size: int | None = None,
        verbose: bool = False,
        r_metrics: bool = False,
        fnmr_fmr: Sequence[float] = (),
        postprocess: str | Sequence[str | PostProcessor] = (),
        ndcg_top_k: Sequence[int] = (),
        full_ranking_metrics: bool = False,
        **postprocess_options: Any,
    ) -> None:
        self.options = MetricOptions(
            tuple(cmc_top_k), tuple(precision_top_k), tuple(map_top_k),
            tuple(pcf_variance), r_metrics, tuple(float(f) for f in fnmr_fmr),
            tuple(ndcg_top_k), full_ranking_metrics,
        )  # fmt: skip
        if distance not in METRICS:
            raise EmbedlabError(f"distance must be one of {METRICS}, got {distance!r}")
        if chunk_size is not None and chunk_size < 1:
            raise EmbedlabError(f"chunk_size must be a positive integer or None, got {chunk_size}")
        unknown = set(postprocess_options) - {"aqe_k", "k1", "k2", "lambda_value", "rerank_top_k"}
        if unknown:
            raise EmbedlabError(f"EmbeddingMetrics: unknown options {sorted(unknown)}")
        steps = [postprocess] if isinstance(postprocess, str) else list(postprocess)
        names = [s for s in steps if isinstance(s, str)]
        built = iter(build_postprocessors(names, **postprocess_options))
        self.postprocessors = [
            next(built) if isinstance(s, str) else s for s in steps if s != "none"
        ]
        self.keys = {
            "embeddings": embeddings_key, "labels": labels_key, "is_query": is_query_key,
            "is_gallery": is_gallery_key, "categories": categories_key,
            "sequence": sequence_key, "row_ids": indices_key,
        }  # fmt: skip
        self.extra_keys = tuple(extra_keys)
        self.distance, self.chunk_size, self.verbose = distance, chunk_size, verbose
        self.setup()

    def setup(self, num_samples: int | None = None) -> EmbeddingMetrics:
        """Forget accumulated data and results; ``num_samples`` is the expected item count.

        Returns ``self`` so that ``EmbeddingMetrics(...).setup(n)`` chains.
        """
        k = self.keys
        self.num_samples = num_samples
        self._batches = BatchColumns(
            (k["embeddings"], k["labels"], *self.extra_keys),
            (k["is_query"], k["is_gallery"], k["categories"], k["sequence"]),
            index_key=k["row_ids"],
        )
        self.query_gallery: QueryGallery | None = None
        self.results: RetrievalResults | None = None
        self.postprocessed: dict[str, RetrievalResults] = {}
        self.table = MetricTable({})
        self.extra: dict[str, Any] = {}
        return self

    @property
    def metrics(self) -> dict[str, dict]:
        """``{"OVERALL": {"cmc": {1: v}, ...}, "<category>": {...}}`` (OML's shape)."""
        return self.table.metrics

    @property
    def metrics_unreduced(self) -> dict[str, dict]:
        """The same shape with one value per valid query of each group, in query order."""
        return self.table.per_query

    def update_data(self, batch: Mapping[str, Any]) -> None:
        """Accumulate one batch (tensors, numpy arrays or lists, one entry per item).

        Required keys: embeddings (``[B, D]``), labels and every extra key. Optional keys
        (all batches or none): ``is_query``/``is_gallery`` (default True), categories,
        sequence ("" or negative = none) and the index (dataset row: sorts the items and
        drops the duplicates distributed samplers pad with).
        """
        self._batches.update(batch)

    @contextmanager
    def _phase(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        if self.verbose:
            logger.info("EmbeddingMetrics: %s took %.2f s", name, time.perf_counter() - started)

    def compute_metrics(self) -> dict[str, dict]:
        """Search, post-process and score; store and return ``.metrics``."""
        columns = self._batches.columns(expected=self.num_samples)
        self.extra = {key: columns[key] for key in self.extra_keys}
        k = self.keys
        optional = {n: columns.get(c) for n, c in k.items() if n not in ("embeddings", "labels")}
        optional["paths"] = self.extra.get(PATHS_KEY)  # the pictures and top-k lists show them
        qg = QueryGallery.from_columns(columns[k["embeddings"]], columns[k["labels"]], **optional)
        self.query_gallery = qg
        width = max([self.options.top_k, *(p.candidates for p in self.postprocessors)])
        with self._phase("knn"):
            results = retrieve(
                qg, width, metric=self.distance, chunk_size=self.chunk_size,  # type: ignore[arg-type]
                at_least_r=self.options.r_metrics, progress=self.verbose,
                full_ranking=self.options.full_ranking_metrics,
            )  # fmt: skip
        n_invalid = int((~results.valid_queries).sum())
        if n_invalid:
            warnings.warn(
                f"{n_invalid} of {len(results)} queries have no relevant gallery item; "
                "they are left out of the metrics",
                stacklevel=2,
            )
        with self._phase("post-processing"):
            self.postprocessed = apply_postprocessors(results, self.postprocessors)
        with self._phase("metrics"):
            self.table = score(results, self.options, self.postprocessed)
        self.results = results.top(self.options.top_k)
        return self.metrics

    def relevant_gallery(self, query_number: int) -> tuple[Tensor, Tensor]:
        """All admissible relevant gallery items of one query (positions, distances),
        nearest first: :meth:`RetrievalResults.relevant_gallery`."""
        if self.results is None:
            raise EmbedlabError("relevant_gallery: call compute_metrics() first")
        return self.results.relevant_gallery(query_number)
