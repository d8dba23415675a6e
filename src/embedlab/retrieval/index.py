"""Search indexes over a gallery of embeddings: exact (chunked kNN) and FAISS.

Both classes share one interface::

    index = ExactIndex(gallery, metric="euclidean")     # or FaissIndex(gallery, ...)
    distances, positions = index.search(queries, k)     # [Q, k] float32, [Q, k] int64
    index.save(path); same_index = load_index(path)

``positions`` are row positions in the gallery the index was built on; rows with fewer
than ``k`` admissible items are padded with ``distance=inf`` and ``position=-1``.
Distances are those of :func:`embedlab.retrieval.knn`: ``euclidean`` is
:math:`\\|q-g\\|_2`, ``cosine`` is :math:`1-\\cos(q, g)`. ``allowed`` restricts one
search to a subset of the gallery rows (e.g. the validation split).

On disk an index is one data file plus a ``<file>.json`` sidecar naming its kind and
metric: ``.npy`` embeddings for :class:`ExactIndex` (memory-mapped on load),
``faiss.write_index`` output for :class:`FaissIndex`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from embedlab.errors import EmbedlabError
from embedlab.io import atomic_path, read_json, write_json

# knn's own building blocks, so the index keeps its arithmetic and tie order exactly.
from embedlab.retrieval.distance import METRICS, augment, auto_chunk_size
from embedlab.retrieval.topk import finish_distances, query_chunks, topk_stable

__all__ = ["ExactIndex", "FaissIndex", "load_index"]

Metric = Literal["euclidean", "cosine"]


def _as_matrix(x: Any, name: str, dim: int | None = None) -> np.ndarray:
    """``x`` (tensor or array, ``[N, D]`` or ``[D]``) as a float32 ``[N, D]`` array."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    array = np.asarray(x)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2:
        raise EmbedlabError(f"{name}: expected an [N, D] matrix, got shape {array.shape}")
    if dim is not None and array.shape[1] != dim:
        raise EmbedlabError(f"{name}: expected dimension {dim}, got {array.shape[1]}")
    if array.dtype != np.float32:
        array = array.astype(np.float32)
    return array


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise EmbedlabError(f"index: metric must be one of {METRICS}, got {metric!r}")


def _check_k(k: int) -> None:
    if k < 1:
        raise EmbedlabError(f"index: k must be >= 1, got {k}")


def _allowed_positions(allowed: Any, ntotal: int) -> np.ndarray | None:
    if allowed is None:
        return None
    positions = np.unique(np.asarray(allowed, dtype=np.int64))
    if positions.size and (positions[0] < 0 or positions[-1] >= ntotal):
        raise EmbedlabError(f"index: allowed positions must lie in [0, {ntotal})")
    return positions


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


class ExactIndex:
    """Exact search with :func:`embedlab.retrieval.knn`'s algorithm and ordering contract.

    ``knn`` augments the gallery (``[-2g, 1, |g|^2]``, one extra copy of it) on every
    call, which dominates the latency of small query batches over a large gallery (for
    one query over 100k rows: ~20x the matrix product itself). The index does that once,
    at build time, and keeps only the augmented gallery; each search then runs ``knn``'s
    loop (query chunks within a 256 MiB block budget, one GEMM each, the same stable
    top-k), so results equal ``knn(queries, gallery, k)`` exactly: ascending distance,
    ties broken by gallery position, also across the top-k boundary.

    Args:
        embeddings: ``[G, D]`` gallery; it is not copied, so a memory-mapped
            ``embeddings.npy`` stays on disk (the augmented copy lives in RAM).
        metric: ``"euclidean"`` or ``"cosine"``.
        chunk_size: query rows per block; None picks it from knn's 256 MiB budget.

    Example:
        >>> index = ExactIndex(np.array([[0.0], [1.0], [1.0], [5.0]]))
        >>> d, p = index.search(np.array([[1.2]]), k=3)
        >>> p.tolist(), [round(v, 3) for v in d[0].tolist()]
        ([[1, 2, 0]], [0.2, 0.2, 1.2])
        >>> index.search(np.array([[1.2]]), k=2, allowed=[0, 3])[1].tolist()
        [[0, 3]]
    """

    kind = "exact"

    def __init__(
        self, embeddings: Any, metric: Metric = "euclidean", chunk_size: int | None = None
    ) -> None:
        _check_metric(metric)
        if chunk_size is not None and chunk_size < 1:
            raise EmbedlabError(f"ExactIndex: chunk_size must be >= 1 or None, got {chunk_size}")
        if isinstance(embeddings, np.ndarray) and embeddings.ndim == 2:
            self.embeddings = embeddings  # no copy: may be a memmap of embeddings.npy
        else:
            self.embeddings = _as_matrix(embeddings, "ExactIndex embeddings")
        self.metric: Metric = metric
        self.chunk_size = chunk_size
        self._augmented = self._augment_gallery()

    def _augment_gallery(self, block_rows: int = 1 << 16) -> torch.Tensor:
        """``knn``'s gallery augmentation, block by block into one preallocated tensor."""
        n, dim = self.embeddings.shape
        extra = 2 if self.metric == "euclidean" else 1
        out = torch.empty((n, dim + extra), dtype=torch.float32)
        for start in range(0, n, block_rows):
            block = np.array(self.embeddings[start : start + block_rows], dtype=np.float32)
            out[start : start + len(block)] = augment(
                torch.from_numpy(block), self.metric, side="gallery"
            )
        return out

    @property
    def ntotal(self) -> int:
        """Number of gallery rows."""
        return int(self.embeddings.shape[0])

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return int(self.embeddings.shape[1])

    def search(self, queries: Any, k: int, allowed: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """``(distances [Q, k] float32, positions [Q, k] int64)`` of the k nearest rows."""
        _check_k(k)
        q = torch.from_numpy(_as_matrix(queries, "queries", self.dim))
        subset = _allowed_positions(allowed, self.ntotal)
        gallery = self._augmented if subset is None else self._augmented[torch.from_numpy(subset)]
        n_queries, n_gallery = q.shape[0], gallery.shape[0]
        out_dist = np.full((n_queries, k), math.inf, dtype=np.float32)
        out_pos = np.full((n_queries, k), -1, dtype=np.int64)
        if n_queries == 0 or n_gallery == 0:
            return out_dist, out_pos
        rows_per_chunk = self.chunk_size or auto_chunk_size(n_gallery)
        k_eff = min(k, n_gallery)
        for rows in query_chunks(n_queries, rows_per_chunk):
            block = augment(q[rows], self.metric, side="query") @ gallery.T
            dist, idx = finish_distances(*topk_stable(block, k_eff), self.metric)
            del block
            out_dist[rows, :k_eff] = dist.numpy()
            out_pos[rows, :k_eff] = idx.numpy()
        if subset is not None:
            out_pos = np.where(out_pos < 0, -1, subset[np.maximum(out_pos, 0)])
        return out_dist, out_pos

    def save(self, path: str | Path) -> Path:
        """Write the gallery to ``path`` (``.npy``) and its ``.json`` sidecar, atomically."""
        path = Path(path)
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.save(handle, np.asarray(self.embeddings, dtype=np.float32))
        write_json(_sidecar(path), {"kind": self.kind, "metric": self.metric, **self._shape()})
        return path

    def _shape(self) -> dict[str, int]:
        return {"rows": self.ntotal, "dim": self.dim}

    @classmethod
    def load(cls, path: str | Path, mmap: bool = True) -> ExactIndex:
        """Read an index written by :meth:`save` (memory-mapped unless ``mmap=False``)."""
        path = Path(path)
        meta = _read_sidecar(path, cls.kind)
        try:
            embeddings = np.load(path, mmap_mode="r" if mmap else None)
        except (OSError, ValueError) as exc:
            raise EmbedlabError(f"{path}: cannot read index ({exc})") from None
        return cls(embeddings, metric=meta["metric"])


class FaissIndex:
    """A FAISS index with :class:`ExactIndex`'s interface, for large galleries.

    ``factory`` is a ``faiss.index_factory`` string: ``"Flat"`` (the default) is exact
    and returns the same neighbours as :class:`ExactIndex`; ``"IVF1024,Flat"`` or
    ``"HNSW32"`` are approximate and much faster on millions of rows (IVF indexes are
    trained on the gallery; ``nprobe`` sets how many lists a query visits).
    Euclidean uses FAISS's L2 metric (square-rooted), cosine its inner product on
    L2-normalised vectors (reported as ``1 - cos``).

    Example:
        >>> index = FaissIndex(np.array([[0.0], [1.0], [5.0]]))
        >>> d, p = index.search(np.array([[1.5]]), k=2)
        >>> p.tolist(), d.round(3).tolist()
        ([[1, 0]], [[0.5, 1.5]])
    """

    kind = "faiss"

    def __init__(
        self,
        embeddings: Any,
        metric: Metric = "euclidean",
        factory: str = "Flat",
        nprobe: int = 16,
        *,
        _index: Any = None,
    ) -> None:
        faiss = _import_faiss()
        _check_metric(metric)
        self.metric: Metric = metric
        self.factory = factory
        if _index is not None:
            self.index = _index
        else:
            gallery = _as_matrix(embeddings, "FaissIndex embeddings")
            self.index = _build_faiss(faiss, gallery, metric, factory)
        self.nprobe = nprobe
        ivf = faiss.try_extract_index_ivf(self.index)
        if ivf is not None:
            ivf.nprobe = nprobe

    @property
    def ntotal(self) -> int:
        """Number of gallery rows."""
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return int(self.index.d)

    def search(self, queries: Any, k: int, allowed: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """``(distances [Q, k] float32, positions [Q, k] int64)`` of the k nearest rows."""
        faiss = _import_faiss()
        _check_k(k)
        q = _as_matrix(queries, "queries", self.dim)
        if self.metric == "cosine":
            q = q.copy()
            faiss.normalize_L2(q)
        subset = _allowed_positions(allowed, self.ntotal)
        params = None
        if subset is not None:
            params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(subset))
            ivf = faiss.try_extract_index_ivf(self.index)
            if ivf is not None:
                params = faiss.SearchParametersIVF(sel=params.sel, nprobe=self.nprobe)
        # faiss.contrib.torch_utils (imported by some libraries, pytorch-metric-learning
        # among them) replaces `search` with a wrapper that takes no `params`; the numpy
        # original stays as `search_numpy`.
        search = getattr(self.index, "search_numpy", self.index.search)
        raw, positions = search(q, k, params=params)
        missing = positions < 0
        if self.metric == "euclidean":
            dist = np.sqrt(np.maximum(raw, 0))
        else:
            dist = np.maximum(1.0 - raw, 0)
        dist = dist.astype(np.float32)
        dist[missing] = math.inf
        return dist, positions.astype(np.int64)

    def save(self, path: str | Path) -> Path:
        """Write the index (``faiss.write_index``) and its ``.json`` sidecar, atomically."""
        faiss = _import_faiss()
        path = Path(path)
        with atomic_path(path) as tmp:
            faiss.write_index(self.index, str(tmp))
        meta = {
            "kind": self.kind,
            "metric": self.metric,
            "factory": self.factory,
            "nprobe": self.nprobe,
            "rows": self.ntotal,
            "dim": self.dim,
        }
        write_json(_sidecar(path), meta)
        return path

    @classmethod
    def load(cls, path: str | Path) -> FaissIndex:
        """Read an index written by :meth:`save`."""
        faiss = _import_faiss()
        path = Path(path)
        meta = _read_sidecar(path, cls.kind)
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as exc:
            raise EmbedlabError(
                f"{path}: cannot read FAISS index ({str(exc).splitlines()[0]})"
            ) from None
        return cls(
            None,
            metric=meta["metric"],
            factory=meta.get("factory", "Flat"),
            nprobe=int(meta.get("nprobe", 16)),
            _index=index,
        )


def _import_faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise EmbedlabError(
            "FAISS is not installed: pip install 'embedlab[search]' (or use the exact index)"
        ) from None
    return faiss


def _build_faiss(faiss: Any, gallery: np.ndarray, metric: str, factory: str) -> Any:
    faiss_metric = faiss.METRIC_L2 if metric == "euclidean" else faiss.METRIC_INNER_PRODUCT
    if metric == "cosine":
        gallery = gallery.copy()
        faiss.normalize_L2(gallery)
    try:
        index = faiss.index_factory(gallery.shape[1], factory, faiss_metric)
    except RuntimeError as exc:
        raise EmbedlabError(
            f"embed.faiss_factory: {factory!r} is not a FAISS index_factory string "
            f"({str(exc).splitlines()[0][:120]})"
        ) from None
    if not index.is_trained:
        if gallery.shape[0] == 0:
            raise EmbedlabError(
                f"FaissIndex: {factory!r} needs training data, the gallery is empty"
            )
        index.train(gallery)
    index.add(gallery)
    return index


def _read_sidecar(path: Path, kind: str) -> dict[str, Any]:
    sidecar = _sidecar(path)
    if not path.is_file() or not sidecar.is_file():
        raise EmbedlabError(f"{path}: index not found (or its sidecar {sidecar.name} is missing)")
    meta = read_json(sidecar)
    if meta.get("kind") != kind:
        raise EmbedlabError(f"{sidecar}: holds a {meta.get('kind')!r} index, not {kind!r}")
    return meta


def load_index(path: str | Path) -> ExactIndex | FaissIndex:
    """Read any index written by ``save``; its sidecar says which kind.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "gallery.npy"
        >>> _ = ExactIndex(np.eye(3), metric="cosine").save(path)
        >>> index = load_index(path)
        >>> type(index).__name__, index.metric, index.ntotal
        ('ExactIndex', 'cosine', 3)
    """
    path = Path(path)
    sidecar = _sidecar(path)
    if not sidecar.is_file():
        raise EmbedlabError(f"{sidecar}: index sidecar not found")
    kind = read_json(sidecar).get("kind")
    if kind == ExactIndex.kind:
        return ExactIndex.load(path)
    if kind == FaissIndex.kind:
        return FaissIndex.load(path)
    raise EmbedlabError(f"{sidecar}: unknown index kind {kind!r} (expected 'exact' or 'faiss')")
