"""Images -> embeddings (one process or many) and the ``data/embeddings/`` store.

- :func:`embed_dataset`, :func:`embed_images`: every embedding pass of the project;
- :func:`write_store`, :func:`read_store`, :class:`StoreInfo`: the store and its
  ``info.json`` contract;
- :class:`Searcher`: k-nearest-neighbour search over a store, with images or embeddings.

Names are imported lazily, so ``import embedlab.embedding`` stays cheap.
"""

from __future__ import annotations

from embedlab.lazy import lazy_exports

_PUBLIC = {
    "embed_dataset": "embedlab.embedding.inference",
    "embed_images": "embedlab.embedding.inference",
    "wants_distributed": "embedlab.embedding.inference",
    "assemble": "embedlab.embedding.gather",
    "gather_batches": "embedlab.embedding.gather",
    "StoreInfo": "embedlab.embedding.store",
    "Store": "embedlab.embedding.store",
    "read_store": "embedlab.embedding.store",
    "write_store": "embedlab.embedding.store",
    "Searcher": "embedlab.embedding.searcher",
    "SearchResult": "embedlab.embedding.searcher",
}

__all__ = sorted(_PUBLIC)

__getattr__ = lazy_exports(__name__, _PUBLIC)
