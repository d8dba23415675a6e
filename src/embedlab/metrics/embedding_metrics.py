"""`EmbeddingMetrics`: accumulate validation batches, then compute retrieval metrics.

Same call pattern as OML: ``setup(num_samples)``, ``update_data(batch)`` per batch,
``compute_metrics()`` once; results in ``.metrics`` and ``.metrics_unreduced``.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import Tensor

from embedlab.errors import EmbedlabError
from embedlab.metrics.functions import (
    OVERALL,
    RETRIEVAL_METRICS,
    _check_top_k,
    calc_pcf,
    calc_r_metrics,
    calc_retrieval_metrics,
    count_relevant,
    factorize,
    group_unreduced_metrics,
    reduce_metrics,
    reject_nonfinite,
)
from embedlab.metrics.rerank import POSTPROCESSORS, expand_queries, k_reciprocal_distances
from embedlab.metrics.verification import calc_fnmr_at_fmr_chunked
from embedlab.retrieval.distance import METRICS, knn

__all__ = ["EmbeddingMetrics"]

logger = logging.getLogger(__name__)

_NO_SEQUENCE = -1


class EmbeddingMetrics:
    """Retrieval metrics over validation embeddings, overall and per category.

    Every item may be a query, a gallery item, or both. For every query the K nearest
    admissible gallery items are found by exact chunked kNN (K = the largest top-k
    asked for); the query itself and items of its sequence are never admissible.
    Queries with no relevant admissible gallery item are left out of the averages,
    counted in ``n_queries_no_relevant`` and reported with a warning. When every item is
    query and gallery the kNN takes its symmetric path (each distance block once).

    Options: ``r_metrics`` adds the scalars ``map@R`` and ``r_precision`` (the kNN then
    keeps the top ``max(R, K)`` of each query); ``fnmr_fmr`` adds ``OVERALL["fnmr@fmr"]``
    (exact, over all admissible pairs, see `embedlab.metrics.verification`);
    ``postprocess="aqe"`` / ``"k_reciprocal"`` re-rank and report every metric again
    under ``"aqe/<metric>"`` / ``"k_reciprocal/<metric>"`` (``OVERALL["aqe/cmc"][1]``).

    After `compute_metrics` the instance exposes, for pictures and per-query reports
    (positions are rows of the accumulated, de-duplicated data, sorted by
    ``indices_key`` when batches carry it):

    - ``query_positions`` ``[Q]``, ``gallery_positions`` ``[G]``;
    - ``knn_distances`` ``[Q, K]`` and ``knn_indices`` ``[Q, K]`` (positions, -1 = padding);
    - ``relevance`` ``[Q, K]`` bool, ``n_relevant`` ``[Q]``, ``valid_queries`` ``[Q]`` bool;
    - ``embeddings``, ``labels``, ``categories``, ``sequence_codes``, ``indices`` and
      ``extra[key]`` for every key in ``extra_keys``.

    ``metrics_unreduced[group][metric][k]`` holds one value per valid query of the
    group, in query order (``OVERALL`` aligns with ``query_positions[valid_queries]``).

    Example:
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
        >>> metric.knn_indices[0].tolist(), metric.relevance[0].tolist()
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
        postprocess: str = "none",
        aqe_k: int = 2,
        k1: int = 20,
        k2: int = 6,
        lambda_value: float = 0.3,
        rerank_top_k: int = 100,
    ) -> None:
        _check_top_k(cmc_top_k, "cmc_top_k")
        _check_top_k(precision_top_k, "precision_top_k")
        _check_top_k(map_top_k, "map_top_k")
        if not all(0.0 <= r <= 1.0 for r in pcf_variance):
            raise EmbedlabError(
                f"pcf_variance must hold numbers in [0, 1], got {tuple(pcf_variance)}"
            )
        if distance not in METRICS:
            raise EmbedlabError(f"distance must be one of {METRICS}, got {distance!r}")
        if chunk_size is not None and chunk_size < 1:
            raise EmbedlabError(f"chunk_size must be a positive integer or None, got {chunk_size}")
        if not all(0.0 <= f <= 1.0 for f in fnmr_fmr):
            raise EmbedlabError(f"fnmr_fmr must hold numbers in [0, 1], got {tuple(fnmr_fmr)}")
        if postprocess not in POSTPROCESSORS:
            raise EmbedlabError(f"postprocess must be one of {POSTPROCESSORS}, got {postprocess!r}")
        if aqe_k < 0:
            raise EmbedlabError(f"aqe_k must be >= 0, got {aqe_k}")
        self.r_metrics = r_metrics
        self.fnmr_fmr = tuple(float(f) for f in fnmr_fmr)
        self.postprocess = postprocess
        self.aqe_k = aqe_k
        if k1 < 1 or k2 < 1 or not 0.0 <= lambda_value <= 1.0 or rerank_top_k < 1:
            raise EmbedlabError(
                f"k_reciprocal needs k1, k2, rerank_top_k >= 1 and lambda_value in [0, 1], got "
                f"k1={k1}, k2={k2}, lambda_value={lambda_value}, rerank_top_k={rerank_top_k}"
            )
        self.k1, self.k2, self.lambda_value = k1, k2, lambda_value
        self.rerank_top_k = rerank_top_k
        self.embeddings_key = embeddings_key
        self.labels_key = labels_key
        self.is_query_key = is_query_key
        self.is_gallery_key = is_gallery_key
        self.categories_key = categories_key
        self.sequence_key = sequence_key
        self.indices_key = indices_key
        self.extra_keys = tuple(extra_keys)
        self.cmc_top_k = tuple(cmc_top_k)
        self.precision_top_k = tuple(precision_top_k)
        self.map_top_k = tuple(map_top_k)
        self.pcf_variance = tuple(pcf_variance)
        self.distance = distance
        self.chunk_size = chunk_size
        self.verbose = verbose
        self.num_samples: int | None = None
        self._reset()

    # ------------------------------------------------------------------ accumulation

    def _reset(self) -> None:
        self._batches: dict[str, list[Any]] = {}
        self._n_batches = 0
        self.metrics: dict[str, dict] = {}
        self.metrics_unreduced: dict[str, dict] = {}
        self.embeddings = torch.zeros(0, 0)
        self.labels = torch.zeros(0, dtype=torch.int64)
        self.is_query = torch.zeros(0, dtype=torch.bool)
        self.is_gallery = torch.zeros(0, dtype=torch.bool)
        self.categories: list[str] | None = None
        self.sequence_codes = torch.zeros(0, dtype=torch.int64)
        self.indices: Tensor | None = None
        self.extra: dict[str, Tensor | list[Any]] = {}
        self.query_positions = torch.zeros(0, dtype=torch.int64)
        self.gallery_positions = torch.zeros(0, dtype=torch.int64)
        self.knn_distances = torch.zeros(0, 0)
        self.knn_indices = torch.zeros(0, 0, dtype=torch.int64)
        self.relevance = torch.zeros(0, 0, dtype=torch.bool)
        self.n_relevant = torch.zeros(0, dtype=torch.int64)
        self.valid_queries = torch.zeros(0, dtype=torch.bool)

    def setup(self, num_samples: int | None = None) -> EmbeddingMetrics:
        """Forget accumulated data and results; ``num_samples`` is the expected item count.

        Returns ``self`` so that ``EmbeddingMetrics(...).setup(n)`` chains.
        """
        self.num_samples = num_samples
        self._reset()
        return self

    @property
    def top_k(self) -> int:
        """K used for the kNN search: the largest cut-off of any metric."""
        return max([*self.cmc_top_k, *self.precision_top_k, *self.map_top_k], default=0)

    def update_data(self, batch: Mapping[str, Any]) -> None:
        """Accumulate one batch (tensors, numpy arrays or lists, one entry per item).

        Required keys: ``embeddings_key`` (``[B, D]``), ``labels_key`` and every extra
        key. Optional keys (all batches or none): ``is_query_key``/``is_gallery_key``
        (default True), ``categories_key``, ``sequence_key`` ("" or negative = none)
        and ``indices_key`` (dataset row, used to sort and drop DDP duplicates).
        """
        if self.embeddings_key not in batch:
            raise EmbedlabError(f"update_data: batch has no key {self.embeddings_key!r}")
        embeddings = _as_tensor(batch[self.embeddings_key], self.embeddings_key)
        if embeddings.ndim != 2:
            raise EmbedlabError(
                f"update_data: {self.embeddings_key!r} must be [batch, dim], "
                f"got {tuple(embeddings.shape)}"
            )
        reject_nonfinite(embeddings, f"update_data: {self.embeddings_key!r}")
        n_items = embeddings.shape[0]
        known = self._batches.get(self.embeddings_key)
        if known and known[0].shape[1] != embeddings.shape[1]:
            raise EmbedlabError(
                f"update_data: {self.embeddings_key!r} has dim {embeddings.shape[1]}, "
                f"earlier batches {known[0].shape[1]}"
            )
        values: dict[str, Any] = {
            self.embeddings_key: embeddings.detach().to("cpu", torch.float32, copy=True)
        }
        for key in (self.labels_key, *self.extra_keys):
            if key not in batch:
                raise EmbedlabError(f"update_data: batch has no key {key!r}")
        optional = (self.is_query_key, self.is_gallery_key, self.categories_key, self.sequence_key)
        for key in (self.labels_key, self.indices_key, *optional, *self.extra_keys):
            if key in batch and key not in values:
                values[key] = _copy_column(batch[key], key, n_items)
        for key, value in values.items():
            self._batches.setdefault(key, []).append(value)
        self._n_batches += 1

    def _column(self, key: str) -> Tensor | list[Any] | None:
        parts = self._batches.get(key)
        if parts is None:
            return None
        if len(parts) != self._n_batches:
            raise EmbedlabError(
                f"key {key!r} is present in {len(parts)} of {self._n_batches} batches; "
                "give it in all batches or none"
            )
        if all(isinstance(p, Tensor) for p in parts):
            return torch.cat(parts)
        return [v for part in parts for v in (part.tolist() if isinstance(part, Tensor) else part)]

    def _collect(self) -> None:
        """Concatenate batches, sort by ``indices_key`` and drop its duplicates."""
        if self._n_batches == 0:
            raise EmbedlabError("compute_metrics: no data; call update_data(batch) first")
        columns = {key: self._column(key) for key in list(self._batches)}
        self._batches = {}  # free the per-batch copies before the heavy part
        keep: Tensor | None = None
        indices = columns.get(self.indices_key)
        if indices is not None:
            indices = torch.as_tensor(indices, dtype=torch.int64)
            order = torch.sort(indices, stable=True).indices
            sorted_indices = indices[order]
            first = torch.ones_like(sorted_indices, dtype=torch.bool)
            first[1:] = sorted_indices[1:] != sorted_indices[:-1]
            keep = order[first]

        def take(value: Tensor | list[Any] | None) -> Any:
            if value is None or keep is None:
                return value
            if isinstance(value, Tensor):
                return value[keep]
            return [value[i] for i in keep.tolist()]

        self.embeddings = take(columns[self.embeddings_key])
        n_items = self.embeddings.shape[0]
        self.labels = _as_int_tensor(take(columns[self.labels_key]), self.labels_key)
        self.indices = take(indices)
        self.is_query = _as_bool_tensor(
            take(columns.get(self.is_query_key)), n_items, self.is_query_key
        )
        self.is_gallery = _as_bool_tensor(
            take(columns.get(self.is_gallery_key)), n_items, self.is_gallery_key
        )
        categories = take(columns.get(self.categories_key))
        self.categories = None if categories is None else _as_str_list(categories)
        self.sequence_codes = _sequence_codes(take(columns.get(self.sequence_key)), n_items)
        self.extra = {key: take(columns[key]) for key in self.extra_keys}
        if self.num_samples is not None and n_items != self.num_samples:
            warnings.warn(
                f"EmbeddingMetrics expected {self.num_samples} samples, got {n_items} "
                "(after dropping duplicated indices)",
                stacklevel=3,
            )

    # ------------------------------------------------------------------ computation

    @contextmanager
    def _phase(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        if self.verbose:
            logger.info("EmbeddingMetrics: %s took %.2f s", name, time.perf_counter() - started)

    def compute_metrics(self) -> dict[str, dict]:
        """Compute, store and return ``.metrics`` (see the class docstring for the shape)."""
        with self._phase("collect"):
            self._collect()
        query_pos = torch.nonzero(self.is_query).squeeze(1)
        gallery_pos = torch.nonzero(self.is_gallery).squeeze(1)
        if query_pos.numel() == 0:
            raise EmbedlabError(
                f"compute_metrics: no query items ({self.is_query_key!r} is never True)"
            )
        if gallery_pos.numel() == 0:
            raise EmbedlabError(
                f"compute_metrics: no gallery items ({self.is_gallery_key!r} is never True)"
            )
        self.query_positions, self.gallery_positions = query_pos, gallery_pos
        query_labels, gallery_labels = self.labels[query_pos], self.labels[gallery_pos]
        query_seq, gallery_seq = self.sequence_codes[query_pos], self.sequence_codes[gallery_pos]

        self.n_relevant = count_relevant(
            query_labels, gallery_labels, query_pos, gallery_pos, query_seq, gallery_seq
        )
        self.valid_queries = self.n_relevant > 0
        width = max(self.top_k, 1)
        if self.r_metrics and self.n_relevant.numel():
            # The R-metrics need each query's top R: keep max(R, k) in the chunked kNN.
            width = max(width, int(self.n_relevant.max()))
        search_width = width
        if self.postprocess == "k_reciprocal":  # re-ranks the top rerank_top_k candidates
            search_width = max(width, self.rerank_top_k)
        queries = _rows(self.embeddings, query_pos)
        gallery = _rows(self.embeddings, gallery_pos)
        search = {
            "metric": self.distance,
            "chunk_size": self.chunk_size,
            "query_ids": query_pos,
            "gallery_ids": gallery_pos,
            "query_sequence": query_seq,
            "gallery_sequence": gallery_seq,
            "progress": self.verbose,
        }
        with self._phase("knn"):
            distances, local = knn(queries, gallery, search_width, **search)  # type: ignore[arg-type]
        found = local >= 0
        safe_local = local.clamp(min=0)
        self.knn_distances = distances[:, : max(self.top_k, 1)]
        self.knn_indices = torch.where(found, gallery_pos[safe_local], -1)[:, : max(self.top_k, 1)]
        relevance = found & (gallery_labels[safe_local] == query_labels.unsqueeze(1))
        self.relevance = relevance[:, : max(self.top_k, 1)]

        with self._phase("metrics"):
            n_invalid = int((~self.valid_queries).sum())
            if n_invalid:
                warnings.warn(
                    f"{n_invalid} of {len(query_pos)} queries have no relevant gallery item; "
                    "they are left out of the metrics",
                    stacklevel=2,
                )
            unreduced = self._score(relevance)
        if self.postprocess == "aqe":
            with self._phase("aqe"):
                expanded = expand_queries(queries, gallery, local, min(self.aqe_k, width))
                _, local_aqe = knn(expanded, gallery, width, **search)  # type: ignore[arg-type]
                found_aqe = local_aqe >= 0
                labels_aqe = gallery_labels[local_aqe.clamp(min=0)]
                relevance_aqe = found_aqe & (labels_aqe == query_labels.unsqueeze(1))
                for name, values in self._score(relevance_aqe).items():
                    unreduced[f"aqe/{name}"] = values
        if self.postprocess == "k_reciprocal":
            with self._phase("k_reciprocal"):
                relevance_kr = self._k_reciprocal(local, query_labels, gallery_labels)
                for name, values in self._score(relevance_kr).items():
                    unreduced[f"k_reciprocal/{name}"] = values
        if self.fnmr_fmr:
            with self._phase("fnmr@fmr"):
                fnmr = calc_fnmr_at_fmr_chunked(
                    queries, gallery, query_labels, gallery_labels, self.fnmr_fmr, **search
                )
        with self._phase("metrics"):
            query_categories = (
                None
                if self.categories is None
                else [self.categories[i] for i in query_pos.tolist()]
            )
            reduced = reduce_metrics(unreduced, query_categories, self.valid_queries)
            grouped = group_unreduced_metrics(unreduced, query_categories, self.valid_queries)

        with self._phase("pcf"):
            pcf = self._pcf_by_group()
        self.metrics = {}
        self.metrics_unreduced = {}
        for group in [OVERALL, *sorted((set(reduced) | set(pcf)) - {OVERALL})]:
            counts = reduced.get(group, {"n_queries": 0, "n_queries_no_relevant": 0})
            group_pcf = pcf.get(group, {})
            self.metrics[group] = {
                **{name: counts.get(name, {}) for name in RETRIEVAL_METRICS},
                **{
                    name: counts[name]
                    for name in unreduced
                    if name not in RETRIEVAL_METRICS and name in counts
                },
                "pcf": group_pcf,
                "n_queries": counts["n_queries"],
                "n_queries_no_relevant": counts["n_queries_no_relevant"],
            }
            per_query = grouped.get(group, {})
            if group == OVERALL and self.fnmr_fmr:
                self.metrics[group]["fnmr@fmr"] = fnmr
            self.metrics_unreduced[group] = {
                **{name: per_query.get(name, {}) for name in RETRIEVAL_METRICS},
                **{
                    name: per_query[name]
                    for name in unreduced
                    if name not in RETRIEVAL_METRICS and name in per_query
                },
                "pcf": dict(group_pcf),
                "n_queries": counts["n_queries"],
                "n_queries_no_relevant": counts["n_queries_no_relevant"],
            }
        return self.metrics

    def _k_reciprocal(self, local: Tensor, query_labels: Tensor, gallery_labels: Tensor) -> Tensor:
        """Relevance of each query's kNN candidates re-ordered by k-reciprocal distance."""
        items = torch.unique(torch.cat([self.query_positions, self.gallery_positions]))
        number = torch.full((self.embeddings.shape[0],), -1, dtype=torch.int64)
        number[items] = torch.arange(items.numel())
        found = local >= 0
        candidates = torch.where(found, number[self.gallery_positions][local.clamp(min=0)], -1)
        final = k_reciprocal_distances(
            _rows(self.embeddings, items),
            number[self.query_positions],
            candidates,
            k1=self.k1,
            k2=self.k2,
            lambda_value=self.lambda_value,
            metric=self.distance,
            chunk_size=self.chunk_size,
        )
        # Ties by gallery index, as everywhere: sort by index, then stably by distance.
        by_index = torch.sort(torch.where(found, local, local.shape[1] + local.max() + 1), dim=1)
        order = torch.gather(final, 1, by_index.indices).sort(dim=1, stable=True).indices
        reranked = torch.gather(local, 1, torch.gather(by_index.indices, 1, order))
        labels = gallery_labels[reranked.clamp(min=0)]
        return (reranked >= 0) & (labels == query_labels.unsqueeze(1))

    def _score(self, relevance: Tensor) -> dict:
        """Per-query metrics of one ranking (``[Q, width]`` relevance, nearest first)."""
        unreduced: dict = calc_retrieval_metrics(
            relevance, self.n_relevant, self.cmc_top_k, self.precision_top_k, self.map_top_k
        )
        if self.r_metrics:
            unreduced.update(calc_r_metrics(relevance, self.n_relevant))
        return unreduced

    def _pcf_by_group(self) -> dict[str, dict[float, float]]:
        """PCF over all embeddings and over each category's items (queries and gallery)."""
        if not self.pcf_variance:
            return {}
        out = {OVERALL: calc_pcf(self.embeddings, self.pcf_variance)}
        if self.categories is None:
            return out
        codes, names = factorize(self.categories)
        order = torch.sort(codes, stable=True).indices
        sizes = torch.bincount(codes, minlength=len(names)).tolist()
        for name, rows in zip(names, torch.split(order, sizes), strict=True):
            if name:
                out[name] = calc_pcf(self.embeddings[rows], self.pcf_variance)
        return out

    def relevant_gallery(self, query_number: int) -> tuple[Tensor, Tensor]:
        """All admissible relevant gallery items of one query, nearest first.

        Args:
            query_number: position among the queries (``0 <= query_number < Q``).

        Returns:
            ``(positions, distances)``: positions in the accumulated data, sorted by
            distance then position.

        Example:
            >>> metric = EmbeddingMetrics(cmc_top_k=(1,), precision_top_k=(), map_top_k=())
            >>> x = torch.tensor([[0.0], [5.0], [1.0], [2.0], [3.0]])
            >>> metric.update_data({"embeddings": x, "labels": [0, 0, 0, 1, 1]})
            >>> _ = metric.compute_metrics()
            >>> metric.relevant_gallery(0)
            (tensor([2, 1]), tensor([1., 5.]))
        """
        if not 0 <= query_number < len(self.query_positions):
            raise EmbedlabError(
                f"query number {query_number} is out of range [0, {len(self.query_positions)})"
            )
        query = int(self.query_positions[query_number])
        gallery = self.gallery_positions
        candidates = gallery[self.labels[gallery] == self.labels[query]]
        if candidates.numel() == 0:
            return candidates, torch.zeros(0)
        distances, local = knn(
            self.embeddings[query : query + 1],
            self.embeddings[candidates],
            candidates.numel(),
            metric=self.distance,  # type: ignore[arg-type]
            query_ids=torch.tensor([query]),
            gallery_ids=candidates,
            query_sequence=self.sequence_codes[query : query + 1],
            gallery_sequence=self.sequence_codes[candidates],
        )
        found = local[0] >= 0
        return candidates[local[0][found]], distances[0][found]


def _rows(x: Tensor, positions: Tensor) -> Tensor:
    """``x[positions]`` without a copy when ``positions`` is every row in order."""
    if positions.numel() == x.shape[0]:
        return x  # positions come from nonzero(), so "all rows" means 0..N-1
    return x[positions]


def _as_tensor(value: Any, key: str) -> Tensor:
    if isinstance(value, Tensor):
        return value
    try:
        return torch.as_tensor(np.asarray(value))
    except (TypeError, ValueError) as error:
        raise EmbedlabError(f"update_data: {key!r} is not numeric: {error}") from None


def _copy_column(value: Any, key: str, n_items: int) -> Tensor | list[Any]:
    """A private copy of one per-item column: a CPU tensor, or a list for anything else."""
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        value = torch.from_numpy(value)
    if isinstance(value, Tensor):
        if value.ndim == 0 or value.shape[0] != n_items:
            raise EmbedlabError(
                f"update_data: {key!r} has {tuple(value.shape)} entries, "
                f"expected {n_items} (one per item)"
            )
        return value.detach().to("cpu", copy=True)
    items = list(value)
    if len(items) != n_items:
        raise EmbedlabError(
            f"update_data: {key!r} has {len(items)} entries, expected {n_items} (one per item)"
        )
    return items


def _as_int_tensor(value: Tensor | list[Any], key: str) -> Tensor:
    try:
        tensor = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError):
        raise EmbedlabError(f"{key!r} must hold integers") from None
    if tensor.is_floating_point() or tensor.is_complex() or tensor.ndim != 1:
        raise EmbedlabError(f"{key!r} must be a 1-d column of integers, got {tensor.dtype}")
    return tensor.to(torch.int64)


def _as_bool_tensor(value: Tensor | list[Any] | None, n_items: int, key: str) -> Tensor:
    if value is None:
        return torch.ones(n_items, dtype=torch.bool)
    tensor = torch.as_tensor(value)
    if tensor.ndim != 1:
        raise EmbedlabError(f"{key!r} must be one flag per item, got shape {tuple(tensor.shape)}")
    return tensor.to(torch.bool)


def _as_str_list(value: Tensor | list[Any]) -> list[str]:
    raw = value.tolist() if isinstance(value, Tensor) else value
    return ["" if v is None else str(v) for v in raw]


def _sequence_codes(value: Tensor | list[Any] | None, n_items: int) -> Tensor:
    """Integer codes for sequence ids; None, "", and negative numbers mean "no sequence"."""
    if value is None:
        return torch.full((n_items,), _NO_SEQUENCE, dtype=torch.int64)
    raw = value.tolist() if isinstance(value, Tensor) else list(value)
    has_sequence = torch.tensor(
        [not (v is None or v == "" or (isinstance(v, (int, float)) and v < 0)) for v in raw],
        dtype=torch.bool,
    )
    codes, _ = factorize(raw)
    return torch.where(has_sequence, codes, _NO_SEQUENCE)
