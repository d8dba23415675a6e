"""Each query's top-k gallery items: the ``reports/topk.csv`` table, and where it comes from.

``reports/topk.csv`` holds one line per (query, rank): ``row_id`` (the query's manifest
row), ``rank`` (1 = nearest), ``gallery_row_id``, ``gallery_path``, ``distance`` and
``relevant`` (1 when the item has the query's label). The validate stage writes it with
:func:`topk_table`; for runs without it, :func:`topk_from_embeddings` recomputes the same
search from the embed stage's ``data/embeddings/`` (validation rows, each query against
the gallery rows but itself and its sequence, the run's ``validate.distance``).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from embedlab.errors import EmbedlabError
from embedlab.retrieval.results import RetrievalResults

if TYPE_CHECKING:
    from embedlab.compare.runs import Run

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
    results: RetrievalResults, row_ids: Sequence[int] | None = None, top_k: int | None = None
) -> pd.DataFrame:
    """Every query's nearest gallery items, one line per (query, rank).

    Args:
        results: the validation ranking; paths are its items' ``paths`` (``""`` when it
            has none).
        row_ids: the report id of each item (position -> id); default: the items'
            ``row_ids``. In the validate stage: ``dataset.df["row_id"]``.
        top_k: ranks kept per query (default: all the results hold).

    Example:
        >>> import torch
        >>> from embedlab.retrieval import QueryGallery, retrieve
        >>> qg = QueryGallery.from_columns(torch.tensor([[0.0], [1.0], [3.0]]), [0, 0, 1],
        ...                                row_ids=[10, 11, 12], paths=["a.png", "b.png", "c.png"])
        >>> table = topk_table(retrieve(qg, k=2))
        >>> list(table.columns)
        ['row_id', 'rank', 'gallery_row_id', 'gallery_path', 'distance', 'relevant']
        >>> table.head(2).values.tolist()
        [[10, 1, 11, 'b.png', 1.0, 1], [10, 2, 12, 'c.png', 3.0, 0]]
    """
    if top_k is not None:
        results = results.top(top_k)
    retrieved = results.retrieved.numpy()
    n_items = len(results.query_gallery)
    ids = results.query_gallery.row_ids.numpy() if row_ids is None else np.asarray(row_ids)
    if len(ids) != n_items:
        raise EmbedlabError(f"topk_table: {len(ids)} row ids for {n_items} items")
    paths = results.query_gallery.paths
    query_numbers, ranks = np.nonzero(retrieved >= 0)  # -1 pads queries with few gallery items
    positions = retrieved[query_numbers, ranks]
    return pd.DataFrame(
        {
            "row_id": ids[results.query_positions.numpy()[query_numbers]],
            "rank": ranks + 1,
            "gallery_row_id": ids[positions],
            "gallery_path": (
                np.asarray(paths, dtype=object)[positions] if paths is not None else ""
            ),
            "distance": results.distances.numpy()[query_numbers, ranks].astype(np.float64),
            "relevant": results.relevance.numpy()[query_numbers, ranks].astype(np.int64),
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

    ``items`` is the embed stage's ``items.parquet``; its validation rows become the same
    query/gallery value validate searches (roles, sequences: :meth:`QueryGallery.from_items`),
    so the lists equal validate's ``topk.csv`` for the same embeddings.

    Example:
        >>> items = pd.DataFrame({"row_id": [0, 1, 2, 3], "path": list("abcd"),
        ...                       "label": [0, 0, 1, 1], "split": ["train"] + ["validation"] * 3,
        ...                       "is_query": True, "is_gallery": True})
        >>> x = np.array([[0.0], [0.0], [1.0], [1.5]], dtype=np.float32)
        >>> table = topk_from_embeddings(x, items, top_k=1)
        >>> table[["row_id", "gallery_row_id", "relevant"]].values.tolist()
        [[1, 2, 0], [2, 3, 1], [3, 2, 1]]
    """
    from embedlab.retrieval import QueryGallery, retrieve

    query_gallery = QueryGallery.from_items(embeddings, items)
    return topk_table(retrieve(query_gallery, top_k, metric=distance))  # type: ignore[arg-type]


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
