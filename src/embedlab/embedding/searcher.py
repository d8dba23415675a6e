"""Search the embeddings written by the ``embed`` stage with images or embeddings.

::

    from embedlab import Searcher

    searcher = Searcher.load("data/embeddings", gallery="validation")
    result = searcher.search(["query.jpg"], k=5)   # image files, PIL images or embeddings
    result.ids, result.paths, result.distances     # [Q, k] each
    print(result.to_frame())

    # a verification decision: the threshold validate chose at a false match rate of 0.1%
    # (reports/thresholds.json), or a distance: result.matches is [Q, k] bool
    result = searcher.search(["query.jpg"], k=5, threshold="fmr=0.001")

Images are decoded and preprocessed exactly as at training time: the extractor and its
preprocessing come from ``models/extractor.json`` (:func:`embedlab.models.load_extractor`
and :func:`embedlab.data.transforms.eval_transform`), and it must be the extractor that
produced the embeddings (checked against ``info.json``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from embedlab.embedding.store import ITEMS_FILE, read_store
from embedlab.errors import EmbedlabError
from embedlab.io import file_sha256
from embedlab.models.thresholds import THRESHOLDS_FILE, Thresholds, parse_threshold, read_thresholds
from embedlab.retrieval.index import ExactIndex, FaissIndex

__all__ = [
    "GALLERY_CHOICES",
    "IMAGE_SUFFIXES",
    "SearchResult",
    "Searcher",
    "expand_image_paths",
]

GALLERY_CHOICES = ("all", "gallery", "train", "validation")
"""``all`` rows, the ``is_gallery`` rows, or the rows of one split."""

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")

Query = str | os.PathLike[str] | Image.Image


def expand_image_paths(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Files as given, folders replaced by their image files (recursively, sorted).

    Example:
        >>> import tempfile, pathlib
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> (root / "b").mkdir(); _ = (root / "b" / "2.png").write_bytes(b"")
        >>> _ = (root / "1.jpg").write_bytes(b""); _ = (root / "notes.txt").write_text("")
        >>> [p.relative_to(root).as_posix() for p in expand_image_paths([root])]
        ['1.jpg', 'b/2.png']
    """
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(
                p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
            )
            if not found:
                raise EmbedlabError(
                    f"{path}: folder holds no image files ({', '.join(IMAGE_SUFFIXES)})"
                )
            out.extend(found)
        elif path.is_file():
            out.append(path)
        else:
            raise EmbedlabError(f"{path}: no such file or folder")
    return out


@dataclass
class SearchResult:
    """Neighbours of each query, nearest first; missing neighbours are padded.

    Attributes:
        queries: a name per query (its path, or ``embedding <i>``).
        ids: ``[Q, k]`` manifest row ids (``row_id`` of ``items.parquet``), ``-1`` = none.
        distances: ``[Q, k]`` float32, ``inf`` where there is no neighbour.
        labels: ``[Q, k]`` labels, ``-1`` where there is no neighbour.
        paths: per query, the ``k`` paths as written in the manifest (``""`` = none).
        files: the same paths resolved against the dataset root (to open the images).
        query_labels: the query's label when it is an image of the dataset, else None.
        threshold: the distance a match must stay strictly below (None: no decision).
        matches: ``[Q, k]`` bool, ``distance < threshold`` of each found neighbour (with
            re-ranking, its embedding distance); None without a threshold.
    """

    queries: list[str]
    ids: np.ndarray
    distances: np.ndarray
    labels: np.ndarray
    paths: list[list[str]]
    files: list[list[str]]
    query_labels: list[int | None] = field(default_factory=list)
    threshold: float | None = None
    matches: np.ndarray | None = None

    def records(self, query: int) -> list[dict[str, Any]]:
        """One dict per found neighbour of a query: ``rank, row_id, path, label, distance``
        (and ``match`` with a threshold)."""
        out = []
        for rank in range(self.ids.shape[1]):
            if self.ids[query, rank] < 0:
                continue
            record = {
                "rank": rank + 1,
                "row_id": int(self.ids[query, rank]),
                "path": self.paths[query][rank],
                "label": int(self.labels[query, rank]),
                "distance": float(self.distances[query, rank]),
            }
            if self.matches is not None:
                record["match"] = bool(self.matches[query, rank])
            out.append(record)
        return out

    def to_frame(self) -> pd.DataFrame:
        """One row per (query, rank): ``query, rank, row_id, path, label, distance`` (and
        ``match`` with a threshold)."""
        columns = ["query", "rank", "row_id", "path", "label", "distance"]
        if self.matches is not None:
            columns.append("match")
        rows = [
            {"query": name, **r} for q, name in enumerate(self.queries) for r in self.records(q)
        ]
        return pd.DataFrame.from_records(rows, columns=columns)

    def to_json(self) -> dict[str, Any]:
        """``{"threshold": t or null, "queries": [{"query", "query_label", "results"}]}``
        with :meth:`records` as each query's results (``embedlab search --json``)."""
        return {
            "threshold": self.threshold,
            "queries": [
                {
                    "query": name,
                    "query_label": self.query_labels[q] if self.query_labels else None,
                    "results": self.records(q),
                }
                for q, name in enumerate(self.queries)
            ],
        }


class Searcher:
    """k-nearest-neighbour search over the ``embed`` stage's output.

    Build it with :meth:`load`; the constructor takes the parts for callers that hold
    them already (tests, notebooks).

    Args:
        index: an :class:`ExactIndex` or :class:`FaissIndex` whose positions are rows of
            ``items`` (``index_rows`` maps them otherwise).
        items: the ``items.parquet`` table (``row_id, path, label, ...``).
        dataset_root: folder that relative item paths start from.
        gallery_rows: positions of the index that may be returned (None: all).
        index_rows: item position of each index position (None: identity).
        model_dir: folder of ``extractor.json`` (needed only to search with images).
        extractor_info: the ``extractor`` block of ``info.json``, checked against the model.
        extractor_sha256: hash of the weights the embeddings came from (checked if given).
        device: where the extractor runs.
        batch_size: images per forward pass.
        thresholds: the validate stage's thresholds, or the path of its
            ``thresholds.json`` (read when a search asks for a rate; checked against
            ``extractor_sha256`` and the index's metric).

    Example:
        >>> items = pd.DataFrame({"row_id": [0, 1, 2], "path": ["a.png", "b.png", "c.png"],
        ...                       "label": [7, 7, 8], "split": ["validation"] * 3})
        >>> searcher = Searcher(ExactIndex(np.array([[0.0], [1.0], [3.0]])), items, "/data")
        >>> result = searcher.search(np.array([[2.9]]), k=2)
        >>> result.ids.tolist(), result.paths, result.labels.tolist()
        ([[2, 1]], [['c.png', 'b.png']], [[8, 7]])
    """

    def __init__(
        self,
        index: ExactIndex | FaissIndex,
        items: pd.DataFrame,
        dataset_root: str | Path,
        *,
        gallery_rows: np.ndarray | None = None,
        index_rows: np.ndarray | None = None,
        model_dir: str | Path | None = None,
        extractor_info: dict[str, Any] | None = None,
        extractor_sha256: str | None = None,
        device: str | torch.device = "cpu",
        batch_size: int = 64,
        thresholds: Thresholds | str | Path | None = None,
    ) -> None:
        self.index = index
        self.thresholds = thresholds
        self._thresholds_source = (
            str(thresholds) if isinstance(thresholds, str | Path) else THRESHOLDS_FILE
        )
        self.items = items.reset_index(drop=True)
        self.dataset_root = Path(dataset_root)
        self.gallery_rows = gallery_rows
        self.index_rows = index_rows
        self.model_dir = Path(model_dir) if model_dir is not None else None
        self.extractor_info = extractor_info
        self.extractor_sha256 = extractor_sha256
        self.device = torch.device(device)
        self.batch_size = batch_size
        self._model: Any = None
        self._pairwise: Any = None
        self._row_by_file: dict[str, int] | None = None
        n_index = len(self.items) if index_rows is None else len(index_rows)
        if index.ntotal != n_index:
            raise EmbedlabError(
                f"Searcher: the index holds {index.ntotal} rows but {n_index} items map onto it"
            )
        self._row_ids = (
            self.items["row_id"].to_numpy(np.int64)
            if "row_id" in self.items
            else (np.arange(len(self.items), dtype=np.int64))
        )
        self._labels = self.items["label"].to_numpy(np.int64)
        self._paths = self.items["path"].astype(str).to_numpy()

    # ------------------------------------------------------------------ construction
    @classmethod
    def load(
        cls,
        embeddings_dir: str | Path = "data/embeddings",
        *,
        gallery: str = "all",
        model_dir: str | Path | None = None,
        index: str | None = None,
        device: str | torch.device = "cpu",
        batch_size: int = 64,
        thresholds: str | Path | None = None,
    ) -> Searcher:
        """Open ``embeddings_dir`` (``embeddings.npy``, ``items.parquet``, ``info.json``).

        Args:
            embeddings_dir: the ``embed`` stage's output folder.
            gallery: which rows may be returned: ``all``, ``gallery`` (``is_gallery``
                rows), or a split (``train``, ``validation``).
            model_dir: the extractor's folder; default ``<embeddings_dir>/../../models``
                (the repo layout), needed only to search with images.
            index: ``exact`` or ``faiss``; default: what ``embed.index`` built.
            device: where the extractor runs.
            batch_size: images per forward pass.
            thresholds: the validate stage's ``thresholds.json``; default
                ``<embeddings_dir>/../../reports/thresholds.json`` (the repo layout), read
                only when a search asks for a false match rate.
        """
        store = read_store(embeddings_dir)
        root, info, items = store.root, store.info, store.items
        kind = index or info.index
        if kind == "faiss":
            built = FaissIndex.load(store.faiss_file)
            if built.metric != info.metric:
                raise EmbedlabError(
                    f"{root / 'info.json'}: metric {info.metric!r} but the FAISS index uses "
                    f"{built.metric!r}"
                )
            n_rows = built.ntotal
        elif kind == "exact":
            embeddings = store.embeddings()
            n_rows = len(embeddings)
        else:
            raise EmbedlabError(f"Searcher.load: index must be 'exact' or 'faiss', got {kind!r}")
        if n_rows != len(items):
            raise EmbedlabError(
                f"{root}: the index holds {n_rows} rows but {ITEMS_FILE} has {len(items)} "
                "(rerun the embed stage)"
            )
        items_path = root / ITEMS_FILE
        rows = select_gallery(items, gallery, items_path)
        index_rows = None
        if kind == "exact":
            # Index only the selected rows: no per-search copy of the gallery subset.
            built = ExactIndex(embeddings if rows is None else embeddings[rows], metric=info.metric)
            index_rows, rows = rows, None
        if model_dir is None:
            model_dir = root.resolve().parent.parent / "models"
        if thresholds is None:
            thresholds = root.resolve().parent.parent / "reports" / THRESHOLDS_FILE
        return cls(
            built,
            items,
            info.dataset_root,
            gallery_rows=rows,
            index_rows=index_rows,
            model_dir=model_dir,
            extractor_info=info.extractor,
            extractor_sha256=info.extractor_sha256,
            device=device,
            batch_size=batch_size,
            thresholds=thresholds,
        )

    # ------------------------------------------------------------------ search
    def search(
        self,
        queries: Any,
        k: int = 5,
        *,
        exclude_self: bool = False,
        rerank: int = 0,
        threshold: float | str | None = None,
    ) -> SearchResult:
        """The ``k`` nearest gallery items of each query.

        Args:
            queries: an image file, a PIL image, a list of them, or embeddings
                (``[Q, D]`` or ``[D]`` tensor/array).
            k: neighbours per query.
            exclude_self: drop the query's own row when the query is a file of the dataset.
            rerank: re-order each query's first ``rerank`` neighbours with the pairwise
                re-ranker of ``<model_dir>/reranker/`` (image queries only; 0: off).
            threshold: a distance, or ``"fmr=RATE"`` for the distance the validate stage
                chose at that false match rate: neighbours at or beyond it are marked as no
                match (``result.matches``). With ``rerank`` the decision reads each item's
                embedding distance, which the threshold was chosen on.
        """
        limit = None if threshold is None else self.resolve_threshold(threshold)
        if k < 1 or rerank < 0:
            raise EmbedlabError(f"search: k must be >= 1 and rerank >= 0, got {k}, {rerank}")
        if rerank and isinstance(queries, torch.Tensor | np.ndarray):
            raise EmbedlabError("search: re-ranking needs image queries, not embeddings")
        names, embeddings, self_rows = self._embed_queries(queries)
        extra = 1 if exclude_self else 0
        width = max(k, rerank + 1) if rerank else k
        positions_allowed = self.gallery_rows
        dist, pos = self.index.search(embeddings, width + extra, allowed=positions_allowed)
        item_pos = (
            pos
            if self.index_rows is None
            else np.where(pos < 0, -1, self.index_rows[np.maximum(pos, 0)])
        )
        if exclude_self:
            dist, item_pos = _drop_rows(dist, item_pos, self_rows, width)
        embedding_dist, embedding_pos = dist, item_pos
        if rerank:
            dist, item_pos = self._rerank(_as_list(queries), dist, item_pos, rerank)
        dist, item_pos = dist[:, :k], item_pos[:, :k]
        matches = None
        if limit is not None:
            compared = _distances_of(item_pos, embedding_pos, embedding_dist) if rerank else dist
            matches = (item_pos >= 0) & (compared < np.float32(limit))
        found = item_pos >= 0
        safe = np.maximum(item_pos, 0)
        ids = np.where(found, self._row_ids[safe], -1)
        labels = np.where(found, self._labels[safe], -1)
        paths = [[str(self._paths[p]) if p >= 0 else "" for p in row] for row in item_pos]
        files = [[self.resolve(p) if p else "" for p in row] for row in paths]
        query_labels = [None if r < 0 else int(self._labels[r]) for r in self_rows]
        return SearchResult(
            names, ids, dist.astype(np.float32), labels, paths, files, query_labels, limit, matches
        )

    def resolve_threshold(self, threshold: float | str) -> float:
        """The distance of a ``threshold`` argument: a number as it is, ``"0.83"`` parsed,
        ``"fmr=0.001"`` looked up in the validate stage's thresholds (one-line error
        listing the rates there when it has none at that rate).

        Example:
            >>> from embedlab.models.thresholds import Threshold
            >>> chosen = Thresholds("euclidean", "", 10, 90, (Threshold(0.01, 0.8, 0.0, 0.2),))
            >>> items = pd.DataFrame({"row_id": [0], "path": ["a.png"], "label": [7]})
            >>> searcher = Searcher(ExactIndex(np.zeros((1, 2))), items, "/d", thresholds=chosen)
            >>> searcher.resolve_threshold("fmr=0.01"), searcher.resolve_threshold("0.5")
            (0.8, 0.5)
        """
        spec = parse_threshold(threshold) if isinstance(threshold, str) else float(threshold)
        if not isinstance(spec, tuple):
            return spec
        return self._thresholds().lookup(spec[1], self._thresholds_source)

    def _thresholds(self) -> Thresholds:
        """The validate stage's thresholds, read once and checked against these embeddings."""
        if self.thresholds is None:
            raise EmbedlabError("search: no thresholds given to look a false match rate up in")
        if not isinstance(self.thresholds, Thresholds):
            source = Path(self.thresholds)
            chosen = read_thresholds(source)
            chosen.check_belongs_to(self.extractor_sha256 or "", self.index.metric, source)
            self.thresholds = chosen
        return self.thresholds

    def resolve(self, path: str) -> str:
        """A manifest path joined with the dataset root (absolute paths stay as they are)."""
        return path if os.path.isabs(path) else os.path.join(str(self.dataset_root), path)

    def embed_images(self, images: Sequence[Query]) -> torch.Tensor:
        """Embeddings of image files or PIL images, preprocessed as at training time."""
        from embedlab.embedding.inference import embed_images

        model = self._extractor()
        return embed_images(model, list(images), model.preprocessing, self.batch_size)

    # ------------------------------------------------------------------ internals
    def _rerank(
        self, queries: list[Query], dist: np.ndarray, item_pos: np.ndarray, top_n: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Re-order each row's first ``top_n`` items with the pairwise re-ranker."""
        from embedlab.data.datasets import DatasetWithLabels
        from embedlab.data.transforms import eval_transform
        from embedlab.embedding.inference import preprocess_images
        from embedlab.embedding.reranker import dataset_images, rerank_top_n

        model = self._reranker()
        n = min(top_n, item_pos.shape[1])
        head = torch.from_numpy(np.ascontiguousarray(item_pos[:, :n]))
        found = head >= 0
        gallery = DatasetWithLabels(
            self.items, self.dataset_root, eval_transform(model.preprocessing)
        )
        load_gallery = dataset_images(gallery)
        query_pixels = preprocess_images(queries, model.preprocessing)
        n_queries = len(queries)

        def load(positions: torch.Tensor) -> torch.Tensor:
            """Positions below ``n_queries`` are the queries, the rest gallery items."""
            is_query = positions < n_queries
            out = torch.empty(len(positions), *query_pixels.shape[1:])
            out[is_query] = query_pixels[positions[is_query]]
            if bool((~is_query).any()):
                out[~is_query] = load_gallery(positions[~is_query] - n_queries)
            return out

        anchors = torch.arange(n_queries)[:, None].expand_as(head)[found]
        with torch.inference_mode():
            logits = model.pair_logits(load, anchors, head[found] + n_queries, self.batch_size)
        scores = torch.full(head.shape, torch.inf)
        scores[found] = torch.sigmoid(logits).float().cpu()
        new_dist, new_pos = rerank_top_n(
            torch.from_numpy(np.ascontiguousarray(dist, dtype=np.float32)),
            torch.from_numpy(np.ascontiguousarray(item_pos)),
            scores,
            distance_weight=model.distance_weight,
        )
        return new_dist.numpy(), new_pos.numpy()

    def _reranker(self) -> Any:
        if self._pairwise is None:
            from embedlab.models.extractor import EXTRACTOR_WEIGHTS
            from embedlab.models.pairwise import load_reranker

            if self.model_dir is None:
                raise EmbedlabError("search: re-ranking needs the models folder (model_dir)")
            folder = self.model_dir / "reranker"
            sha256 = file_sha256(self.model_dir / EXTRACTOR_WEIGHTS)
            if self.extractor_sha256 and sha256 != self.extractor_sha256:
                raise EmbedlabError(
                    f"{self.model_dir / EXTRACTOR_WEIGHTS}: weights changed since the "
                    "embeddings were made (rerun the embed stage)"
                )
            model = load_reranker(folder, extractor_sha256=sha256, device=self.device)
            if model is None:
                raise EmbedlabError(
                    f"{folder}: no re-ranker was trained (dvc exp run -S rerank.enabled=true)"
                )
            self._pairwise = model
        return self._pairwise

    def _embed_queries(self, queries: Any) -> tuple[list[str], np.ndarray, list[int]]:
        if isinstance(queries, torch.Tensor | np.ndarray):
            matrix = (
                queries.detach().cpu().numpy() if isinstance(queries, torch.Tensor) else queries
            )
            matrix = matrix[None, :] if matrix.ndim == 1 else matrix
            names = [f"embedding {i}" for i in range(len(matrix))]
            return names, np.asarray(matrix, dtype=np.float32), [-1] * len(matrix)
        if isinstance(queries, str | os.PathLike | Image.Image):
            queries = [queries]
        queries = list(queries)
        if not queries:
            raise EmbedlabError("search: no queries given")
        names = [
            f"image {i}" if isinstance(q, Image.Image) else str(q) for i, q in enumerate(queries)
        ]
        self_rows = [self._dataset_row(q) for q in queries]
        return names, self.embed_images(queries).numpy(), self_rows

    def _dataset_row(self, query: Query) -> int:
        """Item position of a query file that belongs to the dataset, else -1."""
        if isinstance(query, Image.Image):
            return -1
        if self._row_by_file is None:
            self._row_by_file = {
                os.path.realpath(self.resolve(str(p))): i for i, p in enumerate(self._paths)
            }
        return self._row_by_file.get(os.path.realpath(str(query)), -1)

    def _extractor(self) -> Any:
        if self._model is None:
            from embedlab.models import load_extractor
            from embedlab.models.extractor import EXTRACTOR_CONFIG, EXTRACTOR_WEIGHTS

            if self.model_dir is None:
                raise EmbedlabError("search: searching with images needs the extractor (model_dir)")
            model = load_extractor(self.model_dir, device=self.device)
            config_path = self.model_dir / EXTRACTOR_CONFIG
            config = json.loads(json.dumps(model.config()))  # as stored in info.json
            if self.extractor_info is not None and config != self.extractor_info:
                raise EmbedlabError(
                    f"{config_path}: not the extractor these embeddings were made with "
                    "(rerun the embed stage)"
                )
            weights = self.model_dir / EXTRACTOR_WEIGHTS
            if self.extractor_sha256 and file_sha256(weights) != self.extractor_sha256:
                raise EmbedlabError(
                    f"{weights}: weights changed since the embeddings were made "
                    "(rerun the embed stage)"
                )
            if model.feat_dim != self.index.dim:
                raise EmbedlabError(
                    f"{config_path}: extractor gives {model.feat_dim}-d embeddings, the index "
                    f"holds {self.index.dim}-d ones"
                )
            self._model = model
        return self._model


def _distances_of(
    item_pos: np.ndarray, embedding_pos: np.ndarray, embedding_dist: np.ndarray
) -> np.ndarray:
    """Each item's embedding distance, read from the search before re-ranking re-ordered it.

    >>> before = np.array([[0.1, 0.2, np.inf]])
    >>> _distances_of(np.array([[5, 3, -1]]), np.array([[3, 5, -1]]), before)
    array([[0.2, 0.1, inf]])
    """
    out = np.full(item_pos.shape, np.inf, dtype=np.float64)
    for q in range(len(item_pos)):
        known = dict(zip(embedding_pos[q].tolist(), embedding_dist[q].tolist(), strict=True))
        out[q] = [known.get(p, np.inf) if p >= 0 else np.inf for p in item_pos[q].tolist()]
    return out.astype(embedding_dist.dtype)


def _as_list(queries: Any) -> list[Query]:
    """Image queries as a list (one file or PIL image becomes a list of one)."""
    if isinstance(queries, str | os.PathLike | Image.Image):
        return [queries]
    return list(queries)


def select_gallery(
    items: pd.DataFrame, gallery: str, source: str | Path = ITEMS_FILE
) -> np.ndarray | None:
    """Positions of the rows a search may return (None: every row).

    Example:
        >>> items = pd.DataFrame({"split": ["train", "validation", "validation"],
        ...                       "is_gallery": [False, True, False]})
        >>> select_gallery(items, "validation").tolist(), select_gallery(items, "gallery").tolist()
        ([1, 2], [1])
        >>> select_gallery(items, "all") is None
        True
    """
    if gallery == "all":
        return None
    if gallery == "gallery":
        if "is_gallery" not in items:
            raise EmbedlabError(f"{source}: no 'is_gallery' column to select the gallery with")
        mask = items["is_gallery"].fillna(False).to_numpy(bool)
    elif gallery in GALLERY_CHOICES:
        mask = (items["split"] == gallery).to_numpy()
    else:
        raise EmbedlabError(
            f"gallery: expected one of {', '.join(GALLERY_CHOICES)}, got {gallery!r}"
        )
    rows = np.flatnonzero(mask)
    if rows.size == 0:
        raise EmbedlabError(f"{source}: gallery {gallery!r} selects no rows")
    return rows


def _drop_rows(
    dist: np.ndarray, pos: np.ndarray, drop: list[int], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Remove each query's own row from its neighbours and keep the first k."""
    out_d = np.full((len(drop), k), np.inf, dtype=np.float32)
    out_p = np.full((len(drop), k), -1, dtype=np.int64)
    for q, own in enumerate(drop):
        keep = pos[q] != own if own >= 0 else np.ones(pos.shape[1], dtype=bool)
        d, p = dist[q][keep][:k], pos[q][keep][:k]
        out_d[q, : len(d)], out_p[q, : len(p)] = d, p
    return out_d, out_p
