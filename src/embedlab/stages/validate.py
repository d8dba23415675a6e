"""validate: retrieval metrics of the exported extractor on the validation split.

It validates through the same Lightning loop, loader and :class:`MetricValCallback` as
training does (:func:`embedlab.stages.validation.validation_setup`), on ``train.trainer``'s
devices.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

from embedlab.compare.topk import TOPK_FILE, topk_table
from embedlab.config import Params, ValidateParams
from embedlab.data.datasets import DatasetQueryGallery
from embedlab.data.manifest import load_manifest
from embedlab.embedding.reranker import PairwiseReranker, dataset_images
from embedlab.errors import EmbedlabError
from embedlab.io import atomic_path, file_sha256, read_json, write_json
from embedlab.lightning import ExtractorModule
from embedlab.lightning.trainer import build_trainer
from embedlab.metrics import OVERALL, EmbeddingMetrics, MetricTable, score
from embedlab.metrics.baseline import BASELINE_PREFIX, raw_pixel_table
from embedlab.metrics.verification import choose_result_thresholds
from embedlab.models import load_extractor
from embedlab.models.extractor import EXTRACTOR_WEIGHTS
from embedlab.models.pairwise import load_reranker
from embedlab.models.thresholds import Threshold, Thresholds
from embedlab.retrieval import RetrievalResults, retrieve
from embedlab.stages.common import (
    ALL_METRICS_REPORT,
    CATEGORY_REPORT,
    IMAGES_DIR,
    MANIFEST,
    METRICS_REPORT,
    MODELS_DIR,
    PER_QUERY_REPORT,
    RERANKED_RUN,
    RERANKER_DIR,
    THRESHOLDS_REPORT,
    TRAIN_REPORT,
    log,
)
from embedlab.stages.validation import build_projection, validation_setup
from embedlab.tracking import open_trackers
from embedlab.tracking.names import HEADLINE as TRACKED_HEADLINE
from embedlab.tracking.names import curves_and_facts


def per_query_table(
    results: RetrievalResults, table: MetricTable, dataset: DatasetQueryGallery
) -> pd.DataFrame:
    """One row per scored query: manifest row id, path, label, category and each metric.

    >>> import torch
    >>> from embedlab.metrics import MetricOptions, score
    >>> from embedlab.retrieval import QueryGallery, retrieve
    >>> df = pd.DataFrame({"label": [0, 0, 1], "path": ["a.png", "b.png", "c.png"],
    ...                    "row_id": [10, 11, 12]})
    >>> dataset = DatasetQueryGallery(df, "/data")
    >>> qg = QueryGallery.from_columns(torch.tensor([[0.0], [1.0], [3.0]]), [0, 0, 1])
    >>> results = retrieve(qg, 1)
    >>> per_query_table(results, score(results, MetricOptions((1,), (), (), ())), dataset)
       row_id   path  label category  cmc@1
    0      10  a.png      0              1.0
    1      11  b.png      0              1.0
    """
    numbers = table.query_numbers
    positions = results.query_positions[numbers].numpy()
    df = dataset.df
    out = pd.DataFrame(
        {
            "row_id": df["row_id"].iloc[positions].to_numpy() if "row_id" in df else positions,
            "path": dataset.paths[positions],
            "label": dataset.labels[positions],
            "category": dataset.categories[positions],
        }
    )
    for key, values in table.per_query_columns().items():
        out[key] = values
    return out


def raw_pixel_baseline(
    cfg: ValidateParams, metric: EmbeddingMetrics, dataset: DatasetQueryGallery
) -> MetricTable | None:
    """The raw-pixel kNN scored on the model's queries and gallery (None when turned off)."""
    if not cfg.baseline.raw_pixels or metric.query_gallery is None:
        return None
    return raw_pixel_table(
        metric.query_gallery,
        dataset.read_image,
        metric.options,
        cfg.distance,
        metric.postprocessors,
        max_side=cfg.baseline.max_side,
    )


HEADLINE = (*TRACKED_HEADLINE, "n_queries")
"""What ``reports/metrics.json`` holds (those computed): the columns ``dvc exp show`` puts
next to the changed params, narrow enough to fit 120 columns beside them."""


def metric_reports(
    table: MetricTable, baseline: MetricTable | None, steps: tuple[str, ...] = ()
) -> tuple[dict[str, float], dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """The three metric files of validate:

    - ``metrics.json``: the :data:`HEADLINE` OVERALL numbers under short keys, with the
      raw-pixel baseline's beside them (a DVC metric);
    - ``metrics_per_category.json``: each category's numbers when there are two or more
      categories (a DVC metric; ``{}`` otherwise, where it would repeat OVERALL);
    - ``metrics_all.json``: every number, OVERALL, per category and baseline (not a DVC
      metric: too wide for a table; ``embedlab compare`` and people read it).

    >>> head, cats, full = metric_reports(
    ...     MetricTable({OVERALL: {"cmc": {1: 0.9, 5: 1.0}, "n_queries": 4},
    ...                  "shoes": {"cmc": {1: 0.8}}}),
    ...     MetricTable({OVERALL: {"cmc": {1: 0.7}}}))
    >>> head
    {'cmc@1': 0.9, 'n_queries': 4.0, 'baseline/raw_pixels/cmc@1': 0.7}
    >>> cats, full["OVERALL"]["cmc@5"]
    ({}, 1.0)
    """
    overall = table.flat(OVERALL)
    headline = {k: overall[k] for k in HEADLINE if k in overall}
    for step in steps:
        headline.update({f"{step}/{k}": overall[f"{step}/{k}"] for k in HEADLINE
                         if f"{step}/{k}" in overall})  # fmt: skip
    full = {group: table.flat(group) for group in table.groups}
    if baseline is not None:
        raw = baseline.flat(OVERALL)
        headline.update({f"{BASELINE_PREFIX}/{k}": raw[k] for k in HEADLINE if k in raw})
        full[BASELINE_PREFIX] = raw
    categories = {c: v for c, v in full.items() if c not in (OVERALL, BASELINE_PREFIX)}
    return headline, categories if len(categories) > 1 else {}, full


def verification_thresholds(
    results: RetrievalResults, fmr_vals: list[float], extractor_sha256: str
) -> Thresholds:
    """``reports/thresholds.json``: the distance chosen at each ``validate.fnmr_fmr`` rate
    on the validation pairs, with the FMR and FNMR it gives there, keyed to the weights.

    >>> import torch
    >>> from embedlab.retrieval import QueryGallery, retrieve
    >>> qg = QueryGallery.from_columns(torch.tensor([[0.0], [1.0], [3.0], [7.0]]), [0, 0, 1, 1])
    >>> chosen = verification_thresholds(retrieve(qg, 1), [0.25], "ab")
    >>> chosen.lookup(0.25), chosen.entries[0].fnmr, chosen.n_negative
    (3.0, 0.5, 8)
    """
    choice = choose_result_thresholds(results, fmr_vals)
    entries = tuple(Threshold(c.fmr_target, c.threshold, c.fmr, c.fnmr) for c in choice.entries)
    return Thresholds(
        results.metric, extractor_sha256, choice.n_positive, choice.n_negative, entries
    )


def validation_reranker(
    params: Params, root: Path, dataset: DatasetQueryGallery
) -> PairwiseReranker | None:
    """The trained re-ranker over the validation images when ``rerank.enabled``, else None.

    A re-ranker trained on another extractor is refused (one line).
    """
    if not params.rerank.enabled:
        return None
    weights = root / MODELS_DIR / EXTRACTOR_WEIGHTS
    model = load_reranker(root / RERANKER_DIR, extractor_sha256=file_sha256(weights))
    if model is None:
        raise EmbedlabError(
            f"{root / RERANKER_DIR}: rerank.enabled is true but no re-ranker was trained "
            "(run `dvc repro rerank`)"
        )
    return PairwiseReranker(
        model,
        dataset_images(dataset),
        top_n=params.rerank.top_n,
        batch_size=params.validate.batch_size,
    )


def rerank_validation(
    metric: EmbeddingMetrics, reranker: PairwiseReranker
) -> tuple[MetricTable, MetricTable, RetrievalResults]:
    """Re-rank the validation search and score it beside the plain one.

    Returns the table of the plain ranking with every post-processed one beside it
    (the re-ranked as ``<name>/<metric>``), the re-ranked ranking's own table (plain
    names: its ``per_query.csv``), and the re-ranked results.
    """
    qg = metric.query_gallery
    assert qg is not None  # the validation loop computed it
    options = metric.options
    width = max(
        [options.top_k, reranker.candidates, *(p.candidates for p in metric.postprocessors)]
    )
    plain = retrieve(
        qg, width, metric=metric.distance,  # type: ignore[arg-type]
        chunk_size=metric.chunk_size, at_least_r=options.r_metrics,
        full_ranking=options.full_ranking_metrics,
    )  # fmt: skip
    reranked = reranker(plain)
    both = score(plain, options, {**metric.postprocessed, reranker.name: reranked})
    return both, score(reranked, options), reranked


def write_reranked_run(
    root: Path,
    dataset: DatasetQueryGallery,
    reranked: tuple[MetricTable, RetrievalResults, float] | None,
    top_k: int,
) -> None:
    """``reports/reranked/``: the re-ranked validation as a run folder of its own
    (``reports/per_query.csv``, ``reports/topk.csv``) for ``embedlab compare``, and
    ``reranked.json`` saying whether there is one."""
    if reranked is None:
        write_json(root / RERANKED_RUN / "reranked.json", {"enabled": False})
        return
    table, results, seconds = reranked
    with atomic_path(root / RERANKED_RUN / PER_QUERY_REPORT) as tmp:
        per_query_table(results, table, dataset).to_csv(tmp, index=False)
    with atomic_path(root / RERANKED_RUN / TOPK_FILE) as tmp:
        topk_table(results.top(top_k), dataset.df["row_id"].to_numpy()).to_csv(tmp, index=False)
    facts = {"enabled": True, "rerank_seconds": round(seconds, 3), "n_queries": len(results)}
    write_json(root / RERANKED_RUN / "reranked.json", facts)


def rerank_if_enabled(
    params: Params, root: Path, metric: EmbeddingMetrics, dataset: DatasetQueryGallery
) -> tuple[MetricTable, tuple[str, ...]]:
    """With ``rerank.enabled``: the table with the re-ranked metrics beside the plain ones
    and the step's name; else the plain table and no step. Writes ``reports/reranked/``."""
    reranker = validation_reranker(params, root, dataset)
    if reranker is None:
        write_reranked_run(root, dataset, None, metric.options.top_k)
        return metric.table, ()
    started = time.perf_counter()
    table, reranked_table, reranked = rerank_validation(metric, reranker)
    seconds = time.perf_counter() - started
    write_reranked_run(root, dataset, (reranked_table, reranked, seconds), metric.options.top_k)
    log.info("validate re-ranked (top %d): %s", reranker.top_n, reranked_table.flat(OVERALL))
    return table, (reranker.name,)


def run_validate(params: Params, root: Path = Path(".")) -> dict[str, Any]:
    """Write ``reports/metrics*.json`` (:func:`metric_reports`),
    ``reports/per_query.csv``, ``reports/topk.csv``, ``reports/thresholds.json``
    (:func:`verification_thresholds`), ``reports/images/`` and ``reports/reranked/``
    (:func:`write_reranked_run`).

    With ``rerank.enabled``, the trained re-ranker re-orders each query's top
    ``rerank.top_n`` and its metrics are reported beside the plain ones
    (``pairwise/cmc@1``).

    Ranks other than 0 of a distributed run return ``{}`` and write nothing.
    """
    cfg = params.validate
    # prepare probed every header; decoding names a file that went bad since (one line)
    manifest = load_manifest(root / MANIFEST, image_check="exists")
    model = load_extractor(root / MODELS_DIR)
    loader, callback = validation_setup(
        params,
        manifest,
        model.preprocessing,
        log_images=True,
        num_workers=cfg.num_workers,
        verbose=True,
    )
    trainer = build_trainer(
        params.train.trainer,
        precision="32-true",  # the embeddings of the exported float32 extractor
        logger=False,
        callbacks=[callback],
        enable_checkpointing=False,
    )
    module = ExtractorModule(model, inference_transform=loader.dataset.batch_transform)
    with warnings.catch_warnings():
        # ShardedBatchSampler returns every index (its own doctest); Lightning cannot tell.
        warnings.filterwarnings("ignore", message="You are using a custom batch sampler")
        trainer.validate(module, loader, verbose=False)
    if not trainer.is_global_zero:
        return {}
    metric, images = callback.metric, callback.last_images
    results, table = metric.results, metric.table
    assert results is not None  # the validation loop computed them
    table, steps = rerank_if_enabled(params, root, metric, callback.dataset)
    baseline = raw_pixel_baseline(cfg, metric, callback.dataset)

    headline, per_category, full = metric_reports(table, baseline, steps)
    write_json(root / METRICS_REPORT, headline)
    write_json(root / CATEGORY_REPORT, per_category)
    write_json(root / ALL_METRICS_REPORT, full)
    with atomic_path(root / PER_QUERY_REPORT) as tmp:
        per_query_table(results, table, callback.dataset).to_csv(tmp, index=False)
    with atomic_path(root / TOPK_FILE) as tmp:  # what `embedlab compare` shows side by side
        topk_table(results, callback.dataset.df["row_id"].to_numpy()).to_csv(tmp, index=False)
    weights_sha256 = file_sha256(root / MODELS_DIR / EXTRACTOR_WEIGHTS)
    thresholds = verification_thresholds(results, cfg.fnmr_fmr, weights_sha256)
    thresholds.write(root / THRESHOLDS_REPORT)
    for name, image in images.items():
        with atomic_path(root / IMAGES_DIR / f"{name}.png") as tmp:
            image.save(tmp, format="PNG")

    step = (
        int(read_json(root / TRAIN_REPORT).get("global_step", 0))
        if (root / TRAIN_REPORT).is_file()
        else 0
    )
    hub = open_trackers(params, root, stage="validate", resume=True)
    try:
        # Curves get a point at the last training step; what is the same at every
        # validation (query counts) and the baseline are facts of the run: its summary.
        curves, facts = curves_and_facts(table.metrics)
        if baseline is not None:
            for part in curves_and_facts(baseline.metrics, BASELINE_PREFIX):
                facts.update(part)  # every number of the baseline is a fact
        hub.log_metrics(curves, step=step)
        for name, image in images.items():
            hub.log_image(f"val/{name}", image, step=step)
        hub.log_summary(facts)
        projector = cfg.projector
        if projector.max_items and hub.takes_embeddings:
            embeddings = results.query_gallery.embeddings.numpy()
            projection = build_projection(embeddings, callback.dataset, projector, params.seed)
            hub.log_embeddings("val/embeddings", projection, step=step)
        hub.log_artifact(root / METRICS_REPORT)
    finally:
        hub.finish()
    log.info("validate: %s", table.flat(OVERALL))
    if baseline is not None:
        log.info("raw-pixel baseline: %s", baseline.flat(OVERALL))
    return table.metrics
