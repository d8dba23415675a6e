"""BalanceSampler: batch structure, repetition, errors, epochs and simulated ranks."""

from __future__ import annotations

from collections import Counter

import pytest
from torch.utils.data import DataLoader

from embedlab.data.samplers import BalanceSampler
from embedlab.errors import EmbedlabError

# label 0: 6 items, 1: 2 items, 2: 5 items, 3: 3 items, 4: 4 items (20 items)
LABELS = [0, 0, 1, 0, 2, 2, 0, 3, 2, 1, 3, 0, 2, 4, 4, 0, 3, 4, 2, 4]


def label_counts(batch: list[int], labels: list[int]) -> Counter[int]:
    return Counter(labels[i] for i in batch)


def test_every_batch_has_n_labels_times_n_instances() -> None:
    sampler = BalanceSampler(LABELS, n_labels=2, n_instances=3, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 20 // 6
    for batch in batches:
        assert len(batch) == 6
        assert sorted(label_counts(batch, LABELS).values()) == [3, 3]
        # items are grouped label by label
        assert [LABELS[i] for i in batch[:3]] == [LABELS[batch[0]]] * 3


def test_small_label_shows_all_items_then_repeats_and_big_labels_do_not_repeat() -> None:
    sampler = BalanceSampler(LABELS, n_labels=5, n_instances=4, seed=0)
    assert len(sampler) == 1
    (batch,) = list(sampler)
    by_label: dict[int, list[int]] = {}
    for i in batch:
        by_label.setdefault(LABELS[i], []).append(i)
    assert set(by_label) == {0, 1, 2, 3, 4}
    assert all(len(items) == 4 for items in by_label.values())
    assert set(by_label[1]) == {2, 9}  # 2 items: both appear, then 2 repeats
    assert set(by_label[3]) == {7, 10, 16}  # 3 items: all appear, then 1 repeat
    for label in (0, 2, 4):
        assert len(set(by_label[label])) == 4


def test_epoch_covers_balanced_data_exactly_once() -> None:
    labels = [i // 10 for i in range(100)]  # 10 labels x 10 items
    sampler = BalanceSampler(labels, n_labels=2, n_instances=5, seed=3)
    batches = list(sampler)
    assert len(batches) == 10
    assert sorted(i for batch in batches for i in batch) == list(range(100))


def test_labels_appear_about_equally_often() -> None:
    labels = [i % 7 for i in range(140)]  # 7 labels x 20 items
    sampler = BalanceSampler(labels, n_labels=3, n_instances=4, seed=5)
    appearances: Counter[int] = Counter()
    for batch in sampler:
        appearances.update(set(label_counts(batch, labels)))
    # 11 batches x 3 labels = 33 label slots over 7 labels: 4 or 5 each
    assert sum(appearances.values()) == 33
    assert set(appearances.values()) <= {4, 5}


def test_at_least_one_batch_for_tiny_data() -> None:
    sampler = BalanceSampler([0, 0, 1, 1, 1], n_labels=2, n_instances=3)
    assert len(sampler) == 1
    assert len(next(iter(sampler))) == 6


def test_same_seed_reproduces_and_epoch_or_seed_changes_batches() -> None:
    def batches(seed: int, epoch: int) -> list[list[int]]:
        sampler = BalanceSampler(LABELS, 2, 2, seed=seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert batches(0, 0) == batches(0, 0)
    assert batches(0, 1) == batches(0, 1)
    assert batches(0, 0) != batches(0, 1)
    assert batches(0, 0) != batches(1, 0)


def test_two_ranks_split_the_global_list() -> None:
    single = list(BalanceSampler(LABELS, 2, 2, seed=4))  # 20 // 4 = 5 batches
    ranks = [
        BalanceSampler(LABELS, 2, 2, seed=4, num_replicas=2, rank=r, drop_last_uneven=False)
        for r in (0, 1)
    ]
    for sampler in ranks:
        sampler.set_epoch(0)
    per_rank = [list(s) for s in ranks]
    assert [len(s) for s in ranks] == [len(b) for b in per_rank] == [3, 3]
    # extended to 6: the first 5 batches are the single-process ones
    merged = [per_rank[i % 2][i // 2] for i in range(6)]
    assert merged[:5] == single
    assert all(a != b for a, b in zip(per_rank[0], per_rank[1], strict=True))


def test_two_ranks_truncate_to_equal_length_by_default() -> None:
    labels = [i // 4 for i in range(32)]  # 8 batches of 2 x 2
    single = list(BalanceSampler(labels, 2, 2, seed=9))
    rank0 = list(BalanceSampler(labels, 2, 2, seed=9, num_replicas=2, rank=0))
    rank1 = list(BalanceSampler(labels, 2, 2, seed=9, num_replicas=2, rank=1))
    assert len(rank0) == len(rank1) == 4
    assert rank0 == single[0::2]
    assert rank1 == single[1::2]
    assert not {tuple(b) for b in rank0} & {tuple(b) for b in rank1}
    odd = [BalanceSampler(LABELS, 2, 2, num_replicas=2, rank=r) for r in (0, 1)]
    assert [len(list(s)) for s in odd] == [2, 2]  # 5 global batches -> 2 each


def test_works_as_dataloader_batch_sampler() -> None:
    sampler = BalanceSampler(LABELS, 2, 2, seed=0)
    loader = DataLoader(list(range(len(LABELS))), batch_sampler=sampler)
    assert [batch.tolist() for batch in loader] == list(sampler)


def test_labels_with_single_instance_are_named() -> None:
    labels = [0, 0, 1, 1, *range(100, 112)]
    with pytest.raises(EmbedlabError) as err:
        BalanceSampler(labels, 2, 2)
    message = str(err.value)
    assert "\n" not in message
    assert "12 label(s) have fewer than 2 instances" in message
    assert "100, 101, 102, 103, 104, 105, 106, 107, 108, 109, ..." in message
    assert "110" not in message


def test_too_many_labels_per_batch() -> None:
    with pytest.raises(EmbedlabError, match=r"train\.sampler\.n_labels=6 is more than the 5"):
        BalanceSampler(LABELS, n_labels=6, n_instances=2)


def test_more_instances_than_the_largest_label_holds() -> None:
    # Beyond the largest label, batches are only repeats (and larger than the data).
    largest = max(Counter(LABELS).values())
    BalanceSampler(LABELS, n_labels=2, n_instances=largest)
    with pytest.raises(
        EmbedlabError,
        match=rf"train\.sampler\.n_instances={largest + 1} is more than the {largest} items",
    ):
        BalanceSampler(LABELS, n_labels=2, n_instances=largest + 1)


@pytest.mark.parametrize(
    ("n_labels", "n_instances", "key"), [(1, 2, "n_labels"), (2, 1, "n_instances")]
)
def test_batch_shape_must_allow_triplets(n_labels: int, n_instances: int, key: str) -> None:
    with pytest.raises(EmbedlabError, match=rf"train\.sampler\.{key} must be >= 2"):
        BalanceSampler(LABELS, n_labels, n_instances)


def test_bad_rank_and_empty_labels() -> None:
    with pytest.raises(EmbedlabError, match="rank must be in"):
        BalanceSampler(LABELS, 2, 2, num_replicas=2, rank=2)
    with pytest.raises(EmbedlabError, match="non-empty"):
        BalanceSampler([], 2, 2)


def test_defaults_to_single_process_without_process_group() -> None:
    sampler = BalanceSampler(LABELS, 2, 2)
    assert (sampler.num_replicas, sampler.rank) == (1, 0)
