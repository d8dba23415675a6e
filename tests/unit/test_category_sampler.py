"""CategoryBalanceSampler: n_categories x n_labels x n_instances, per rank, and its refusals."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from embedlab.config import parse_params
from embedlab.data.manifest import Manifest
from embedlab.data.samplers import CategoryBalanceSampler
from embedlab.errors import EmbedlabError
from embedlab.stages.train import build_train_loader

# 3 categories of 2, 4 and 6 labels; labels of 3 to 6 items.
CATEGORY_OF_LABEL = ["a"] * 2 + ["b"] * 4 + ["c"] * 6
SIZES = [3, 4, 5, 6] * 3
LABELS = np.repeat(np.arange(12), SIZES)
CATEGORIES = np.array(CATEGORY_OF_LABEL)[LABELS]


def _sampler(**kwargs: object) -> CategoryBalanceSampler:
    options = {"n_categories": 2, "n_labels": 2, "n_instances": 3, "seed": 0, **kwargs}
    return CategoryBalanceSampler(LABELS, CATEGORIES, **options)  # type: ignore[arg-type]


def test_every_batch_has_categories_times_labels_times_instances() -> None:
    sampler = _sampler()
    assert sampler.batch_size == 12 and len(sampler) == len(LABELS) // 12
    for epoch in range(5):
        sampler.set_epoch(epoch)
        for batch in sampler:
            labels = Counter(LABELS[batch].tolist())
            assert len(batch) == 12 and set(labels.values()) == {3} and len(labels) == 4
            per_category = Counter(CATEGORY_OF_LABEL[label] for label in labels)
            assert len(per_category) == 2 and set(per_category.values()) == {2}
            for label in labels:  # distinct items when the label has enough
                items = [i for i in batch if LABELS[i] == label]
                assert len(set(items)) == 3


def test_labels_are_visited_about_equally_often() -> None:
    """Categories are drawn in proportion to their labels (OML's default weighting)."""
    sampler = _sampler(n_categories=1)
    seen: Counter[int] = Counter()
    for epoch in range(300):
        sampler.set_epoch(epoch)
        for batch in sampler:
            seen.update(set(LABELS[batch].tolist()))
    counts = np.array([seen[label] for label in range(12)])
    assert counts.min() > 0.8 * counts.mean() and counts.max() < 1.2 * counts.mean()


def test_ranks_split_one_seeded_list_and_seeds_reproduce() -> None:
    ranks = [_sampler(num_replicas=2, rank=r) for r in (0, 1)]
    full = ranks[0].global_batches()
    assert [list(r) for r in ranks] == [full[0::2], full[1::2]]
    assert _sampler().global_batches()[:2] == full[:2]  # a prefix of the same stream
    assert list(_sampler()) == list(_sampler())
    assert list(_sampler(seed=1)) != list(_sampler())


@pytest.mark.parametrize(
    ("categories", "options", "message"),
    [
        (np.full(len(LABELS), ""), {}, r"needs a category for every item: 54 of 54 have none"),
        (
            np.where(np.arange(len(LABELS)) == 0, "b", CATEGORIES),
            {},
            r"label 0 lies in several categories \('b', 'a'\)",
        ),
        (CATEGORIES, {"n_categories": 4}, r"n_categories=4 must be in \[1, 3\]"),
        (CATEGORIES, {"n_labels": 3}, r"n_labels=3: 1 categor\(ies\) have fewer labels: 'a'"),
    ],
)
def test_refusals_are_one_line(categories: np.ndarray, options: dict, message: str) -> None:
    kwargs = {"n_categories": 2, "n_labels": 2, "n_instances": 2, **options}
    with pytest.raises(EmbedlabError, match=message) as caught:
        CategoryBalanceSampler(LABELS, categories, **kwargs)
    assert "\n" not in str(caught.value)


PREPROCESSING = {"input_size": [3, 8, 8], "mean": [0.5] * 3, "std": [0.5] * 3}


def _manifest(tmp_path: Path, categories: list[str] | None) -> Manifest:
    frame = pd.DataFrame(
        {"path": [f"{i}.png" for i in range(len(LABELS))], "label": LABELS, "split": "train"}
    )
    if categories is not None:
        frame["category"] = categories
    return Manifest(frame, tmp_path, tmp_path / "manifest.csv")


def test_the_train_stage_builds_it_from_params(tmp_path: Path) -> None:
    sampler_cfg = {"name": "category_balance", "n_categories": 3, "n_labels": 2, "n_instances": 2}
    params = parse_params({"train": {"sampler": sampler_cfg}})
    loader, sampler = build_train_loader(
        params, _manifest(tmp_path, list(CATEGORIES)), PREPROCESSING
    )
    assert isinstance(sampler, CategoryBalanceSampler) and loader.batch_sampler is sampler
    batch = next(iter(sampler))
    assert len(batch) == 12 and len(set(CATEGORIES[batch])) == 3


def test_the_train_stage_refuses_data_without_categories(tmp_path: Path) -> None:
    params = parse_params({"train": {"sampler": {"name": "category_balance"}}})
    with pytest.raises(EmbedlabError) as caught:
        build_train_loader(params, _manifest(tmp_path, None), PREPROCESSING)
    assert str(caught.value) == (
        f"{tmp_path / 'manifest.csv'}: train split: train.sampler.name: category_balance needs "
        "a 'category' column with a category for every row; this data has none (use "
        "train.sampler.name: balance)"
    )
