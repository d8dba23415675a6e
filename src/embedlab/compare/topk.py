"""Each query's top-k gallery items: the ``reports/topk.csv`` table, and where it comes from.

``reports/topk.csv`` holds one line per (query, rank): ``row_id`` (the query's manifest
row), ``rank`` (1 = nearest), ``gallery_row_id``, ``gallery_path``, ``distance`` and
``relevant`` (1 when the item has the query's label). The validate stage writes it with
:func:`topk_table`; for runs without it, :func:`topk_from_embeddings` recomputes the same
search from the embed stage's ``data/embeddings/`` (validation rows, each query against
the gallery rows but itself, the run's ``validate.distance``).
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from embedlab.errors import EmbedlabError

if TYPE_CHECKING:
    from embedlab.compare.runs import Run
    from embedlab.metrics import EmbeddingMetrics

__all__ = [
    "TOPK_COLUMNS",
    "TOPK_FILE",
    "load_topk",
    "parse_topk",
    "topk_from_embeddings",
    "topk_table",
]

log = logging.getLogger("embedlab")

TOPK_FILE = "reports/topk.csv"
"""Where the validate stage writes :func:`topk_table` (relative to the repo root)."""
TOPK_COLUMNS = ("row_id", "rank", "gallery_row_id", "gallery_path", "distance", "relevant")
EMBEDDINGS_NPY = "data/embeddings/embeddings.npy"
ITEMS_PARQUET = "data/embeddings/items.parquet"


def topk_table(
    metric: EmbeddingMetrics, row_ids: Sequence[int] | None = None, top_k: int | None = None
) -> pd.DataFrame:
    """Every query's nearest gallery items from a computed :class:`EmbeddingMetrics`.

    Args:
        metric: after ``compute_metrics()``.
        row_ids: manifest row id of each accumulated item (position -> id); default: the
            positions themselves. In the validate stage: ``dataset.df["row_id"]``.
        top_k: ranks kept per query (default: all the metric searched).

    Example:
        >>> import torch
        >>> from embedlab.metrics import EmbeddingMetrics
        >>> metric = EmbeddingMetrics(cmc_top_k=(2,), precision_top_k=(), map_top_k=(),
        ...                           pcf_variance=(), extra_keys=("paths",))
        >>> metric.update_data({"embeddings": torch.tensor([[0.0], [1.0], [3.0]]),
        ...                     "labels": [0, 0, 1], "paths": ["a.png", "b.png", "c.png"]})
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")  # label 1 has one item
        ...     _ = metric.compute_metrics()
        >>> table = topk_table(metric, row_ids=[10, 11, 12])
        >>> list(table.columns)
        ['row_id', 'rank', 'gallery_row_id', 'gallery_path', 'distance', 'relevant']
        >>> table.head(2).values.tolist()
        [[10, 1, 11, 'b.png', 1.0, 1], [10, 2, 12, 'c.png', 3.0, 0]]
    """
    indices = metric.knn_indices.numpy()
    if top_k is not None:
        indices = indices[:, :top_k]
    width = indices.shape[1]
    distances = metric.knn_distances.numpy()[:, :width]
    relevant = metric.relevance.numpy()[:, :width]
    n_items = metric.embeddings.shape[0]
    ids = np.arange(n_items) if row_ids is None else np.asarray(row_ids, dtype=np.int64)
    if len(ids) != n_items:
        raise EmbedlabError(f"topk_table: {len(ids)} row ids for {n_items} items")
    paths = metric.extra.get("paths")
    query_numbers, ranks = np.nonzero(indices >= 0)  # -1 pads queries with few gallery items
    positions = indices[query_numbers, ranks]
    return pd.DataFrame(
        {
            "row_id": ids[metric.query_positions.numpy()[query_numbers]],
            "rank": ranks + 1,
            "gallery_row_id": ids[positions],
            "gallery_path": (
                np.asarray(paths, dtype=object)[positions] if paths is not None else ""
            ),
            "distance": distances[query_numbers, ranks].astype(np.float64),
            "relevant": relevant[query_numbers, ranks].astype(np.int64),
        }
    )


def parse_topk(data: bytes, where: str) -> pd.DataFrame:
    """Read and check a ``topk.csv`` (columns :data:`TOPK_COLUMNS`, ``gallery_path`` optional).

    Example:
        >>> text = b"row_id,rank,gallery_row_id,distance,relevant\\n0,1,3,0.5,1\\n"
        >>> parse_topk(text, "topk.csv").values.tolist()
        [[0, 1, 3, 0.5, 1, '']]
    """
    try:
        table = pd.read_csv(io.BytesIO(data), dtype={"gallery_path": str}, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise EmbedlabError(f"{where}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    for column in ("row_id", "rank", "gallery_row_id", "distance", "relevant"):
        if column not in table:
            raise EmbedlabError(f"{where}: column '{column}' is missing (columns: {list(table)})")
        values = pd.to_numeric(table[column], errors="coerce")
        if values.isna().any():
            row = int(values.isna().to_numpy().argmax())
            raise EmbedlabError(f"{where}: row {row + 2}, column '{column}' is not a number")
        table[column] = values.astype("float64" if column == "distance" else "int64")
    if "gallery_path" not in table:
        table["gallery_path"] = ""
    return table


def topk_from_embeddings(
    embeddings: np.ndarray,
    items: pd.DataFrame,
    top_k: int = 5,
    distance: str = "euclidean",
) -> pd.DataFrame:
    """The validation search redone on stored embeddings (``data/embeddings/``).

    ``items`` is the embed stage's ``items.parquet`` (``row_id, path, label, split,
    is_query, is_gallery``), one row per embedding.

    Example:
        >>> items = pd.DataFrame({"row_id": [0, 1, 2, 3], "path": list("abcd"),
        ...                       "label": [0, 0, 1, 1], "split": ["train"] + ["validation"] * 3,
        ...                       "is_query": True, "is_gallery": True})
        >>> x = np.array([[0.0], [0.0], [1.0], [1.5]], dtype=np.float32)
        >>> table = topk_from_embeddings(x, items, top_k=1)
        >>> table[["row_id", "gallery_row_id", "relevant"]].values.tolist()
        [[1, 2, 0], [2, 3, 1], [3, 2, 1]]
    """
    import torch

    from embedlab.metrics import EmbeddingMetrics

    if len(embeddings) != len(items):
        raise EmbedlabError(f"data/embeddings: {len(embeddings)} embeddings for {len(items)} items")
    rows = (items["split"].astype(str) == "validation").to_numpy()
    if not rows.any():
        raise EmbedlabError("data/embeddings: no validation rows to search")
    validation = items[rows]
    metric = EmbeddingMetrics(
        cmc_top_k=(top_k,),
        precision_top_k=(),
        map_top_k=(),
        pcf_variance=(),
        distance=distance,
        extra_keys=("paths",),
    )
    metric.update_data(
        {
            "embeddings": torch.from_numpy(np.ascontiguousarray(embeddings[rows], np.float32)),
            "labels": torch.tensor(validation["label"].to_numpy(np.int64)),
            "is_query": torch.tensor(validation["is_query"].to_numpy(bool)),
            "is_gallery": torch.tensor(validation["is_gallery"].to_numpy(bool)),
            "paths": validation["path"].astype(str).tolist(),
        }
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # queries without a relevant item: validate warned
        metric.compute_metrics()
    return topk_table(metric, validation["row_id"].to_numpy(np.int64), top_k)


def _validate_setting(params: Mapping[str, Any], key: str, default: Any) -> Any:
    section = params.get("validate")
    return section.get(key, default) if isinstance(section, Mapping) else default


def load_topk(run: Run, top_k: int = 5) -> pd.DataFrame | None:
    """The run's top-k lists: ``reports/topk.csv``, else recomputed from its embeddings.

    None (with a log line) when the run has neither, or when they do not cover the
    run's queries.
    """
    source = run.source
    table: pd.DataFrame | None = None
    data = source.read_bytes(TOPK_FILE)
    if data is not None:
        table = parse_topk(data, source.where(TOPK_FILE))
    else:
        npy, parquet = source.read_bytes(EMBEDDINGS_NPY), source.read_bytes(ITEMS_PARQUET)
        if npy is None or parquet is None:
            log.warning(
                "compare: run '%s' has neither %s nor data/embeddings/: no top-k images",
                run.name,
                TOPK_FILE,
            )
            return None
        embeddings = np.load(io.BytesIO(npy), allow_pickle=False)
        items = pd.read_parquet(io.BytesIO(parquet))
        distance = str(_validate_setting(run.params, "distance", "euclidean"))
        table = topk_from_embeddings(embeddings, items, top_k, distance)
    missing = set(run.per_query["row_id"].tolist()) - set(table["row_id"].tolist())
    if missing:
        log.warning(
            "compare: top-k lists of run '%s' miss %d of its queries (e.g. row_id %d): "
            "not drawing them",
            run.name,
            len(missing),
            min(missing),
        )
        return None
    return table[table["rank"] <= top_k].reset_index(drop=True)
