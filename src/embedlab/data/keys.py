"""Names of the keys of dataset items and batches, defined once.

Training items (:class:`~embedlab.data.datasets.DatasetWithLabels`) carry ``INPUT``
(``C,H,W`` float), ``LABELS``, ``PATHS`` and ``IDX``; inference items
(:class:`~embedlab.data.datasets.InferenceImages`) carry ``IDX`` and ``INPUT`` as
``uint8``. Model outputs add ``EMBEDDINGS``. Validation columns (``IS_QUERY``,
``IS_GALLERY``, ``CATEGORIES``, ``SEQUENCE``) are what
:class:`~embedlab.metrics.EmbeddingMetrics` reads.

>>> INPUT, LABELS, EMBEDDINGS
('input_tensors', 'labels', 'embeddings')
"""

INPUT = "input_tensors"
LABELS = "labels"
PATHS = "paths"
IDX = "idx"
IS_QUERY = "is_query"
IS_GALLERY = "is_gallery"
CATEGORIES = "categories"
SEQUENCE = "sequence"
EMBEDDINGS = "embeddings"
