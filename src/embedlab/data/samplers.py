"""Balanced batch samplers for metric learning, aware of distributed training.

- :class:`BalanceSampler`: ``n_labels x n_instances`` (``train.sampler.name: balance``);
- :class:`CategoryBalanceSampler`: ``n_categories x n_labels x n_instances``, each
  batch's labels from a few categories (``category_balance``, OML's sampler of that name);
- :class:`ShardedBatchSampler`: evaluation batches dealt out to ranks.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch.distributed as dist
from torch.utils.data import Sampler

from embedlab.errors import EmbedlabError

_MAX_NAMED_LABELS = 10


class _CyclingQueue:
    """Endless stream of distinct-within-a-draw values from repeatedly shuffled ``values``.

    Each pass over the shuffled values is used up before the next reshuffle, so every value
    comes out equally often (up to one pass). A draw that straddles two passes skips the values
    it already holds; they keep their place in the new pass and come out later in it.
    """

    def __init__(self, values: np.ndarray) -> None:
        self.values = values
        # Positions into ``values`` (not the values themselves), so membership is a mask lookup.
        self.order = np.empty(0, dtype=np.int64)
        self.position = 0

    def draw(self, rng: np.random.Generator, k: int) -> np.ndarray:
        """Return ``k`` distinct values (``k <= len(values)``)."""
        taken = self.order[self.position : self.position + k]
        self.position += len(taken)
        if len(taken) < k:
            size = len(self.values)
            fresh = rng.permutation(size)
            held = np.zeros(size, dtype=bool)
            held[taken] = True
            extra = fresh[~held[fresh]][: k - len(taken)]
            in_extra = np.zeros(size, dtype=bool)
            in_extra[extra] = True
            self.order = fresh[~in_extra[fresh]]
            self.position = 0
            taken = np.concatenate([taken, extra])
        return self.values[taken]


class RankedBatchSampler(Sampler[list[int]]):
    """What the balanced samplers share: one seeded global list of batches, split by rank.

    Every rank builds the same global list of batches (:meth:`global_batches`, from a
    generator seeded with ``(seed, epoch)``); rank ``r`` takes batches ``r, r + W, r + 2W,
    ...`` of it (``W = num_replicas``). With ``drop_last_uneven=True`` the list is
    truncated so that every rank gets ``total // W`` batches; otherwise it is extended to
    ``ceil(total / W)`` per rank. Every rank gets at least one batch. Subclasses set
    ``batch_size`` and ``num_batches_total`` and draw one batch in :meth:`draw_batch`.
    """

    batch_size: int
    num_batches_total: int

    def __init__(
        self,
        seed: int,
        num_replicas: int | None,
        rank: int | None,
        drop_last_uneven: bool,
    ) -> None:
        _resolve_replicas(num_replicas, rank)  # fail early on a bad explicit rank
        self.seed = int(seed)
        # None = ask torch.distributed at iteration time: Lightning builds the loader before it
        # starts the process group (and ddp_spawn pickles it into the workers).
        self._num_replicas = num_replicas
        self._rank = rank
        self.drop_last_uneven = drop_last_uneven
        self.epoch = 0

    @property
    def num_replicas(self) -> int:
        """World size: the one given, else that of the ``torch.distributed`` group, else 1."""
        return _resolve_replicas(self._num_replicas, self._rank)[0]

    @property
    def rank(self) -> int:
        """This process' rank: the one given, else the ``torch.distributed`` rank, else 0."""
        return _resolve_replicas(self._num_replicas, self._rank)[1]

    @property
    def num_batches_per_rank(self) -> int:
        """Batches each rank iterates per epoch (see :meth:`batches_per_rank`)."""
        return self.batches_per_rank(self.num_replicas)

    def batches_per_rank(self, num_replicas: int) -> int:
        """Batches per rank per epoch when training on ``num_replicas`` ranks.

        >>> BalanceSampler([0, 0, 1, 1] * 10, 2, 2).batches_per_rank(4)
        2
        """
        if self.drop_last_uneven:
            per_rank = self.num_batches_total // num_replicas
        else:
            per_rank = math.ceil(self.num_batches_total / num_replicas)
        return max(1, per_rank)

    def set_epoch(self, epoch: int) -> None:
        """Use the batches of ``epoch`` on the next iteration (same on every rank).

        Lightning calls ``set_epoch`` on a loader's ``sampler`` only, not on its
        ``batch_sampler``: the train stage calls it from
        :class:`embedlab.lightning.EpochSeedCallback`.
        """
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_batches_per_rank

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.global_batches()[self.rank :: self.num_replicas]

    def global_batches(self) -> list[list[int]]:
        """All ranks' batches of the current epoch; rank ``r`` iterates ``[r::num_replicas]``.

        The first ``k`` batches do not depend on ``num_replicas``: the list is a prefix of one
        stream seeded by ``(seed, epoch)``.

        Example:
            >>> sampler = BalanceSampler([0, 0, 1, 1, 2, 2, 3, 3], 2, 2, num_replicas=2, rank=0)
            >>> all_batches = sampler.global_batches()
            >>> len(all_batches), list(sampler) == all_batches[0::2]
            (2, True)
        """
        rng = np.random.default_rng([self.seed, self.epoch])
        state = self.epoch_state()
        return [
            self.draw_batch(rng, state)
            for _ in range(self.num_batches_per_rank * self.num_replicas)
        ]

    def epoch_state(self) -> Any:
        """Fresh per-epoch drawing state (the cycling queues), passed to :meth:`draw_batch`."""
        return None

    def draw_batch(self, rng: np.random.Generator, state: Any) -> list[int]:
        """One batch of dataset indices."""
        raise NotImplementedError


class _LabelItems:
    """Dataset positions grouped by label id, drawn ``n_instances`` at a time."""

    def __init__(self, inverse: np.ndarray, counts: np.ndarray) -> None:
        by_label = np.argsort(inverse, kind="stable")
        self.items_per_label: list[np.ndarray] = np.split(by_label, np.cumsum(counts)[:-1])

    def draw(
        self,
        rng: np.random.Generator,
        queues: dict[int, _CyclingQueue],
        label_id: int,
        n_instances: int,
    ) -> list[int]:
        """``n_instances`` items of a label: distinct from a shuffled cycle when it has
        enough, else all of them plus random repeats."""
        items = self.items_per_label[label_id]
        if items.size < n_instances:
            repeats = rng.choice(items, n_instances - items.size, replace=True)
            chosen = np.concatenate([rng.permutation(items), repeats])
        else:
            queue = queues.setdefault(label_id, _CyclingQueue(items))
            chosen = queue.draw(rng, n_instances)
        return chosen.tolist()


def _check_sizes(n_labels: int, n_instances: int) -> None:
    if n_labels < 2:
        raise EmbedlabError(
            f"train.sampler.n_labels must be >= 2 (a triplet needs a negative label), "
            f"got {n_labels}"
        )
    if n_instances < 2:
        raise EmbedlabError(
            f"train.sampler.n_instances must be >= 2 (a triplet needs a positive), "
            f"got {n_instances}"
        )


def _label_counts(labels: Sequence[int], sampler: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``np.unique`` of the labels (values, inverse, counts); every label needs 2 items."""
    label_array = np.asarray(labels)
    if label_array.ndim != 1 or label_array.size == 0:
        raise EmbedlabError(
            f"{sampler} needs a non-empty 1-D sequence of labels, got shape {label_array.shape}"
        )
    unique, inverse, counts = np.unique(label_array, return_inverse=True, return_counts=True)
    too_small = unique[counts < 2]
    if too_small.size:
        named = ", ".join(str(label) for label in too_small[:_MAX_NAMED_LABELS])
        more = ", ..." if too_small.size > _MAX_NAMED_LABELS else ""
        raise EmbedlabError(
            f"{too_small.size} label(s) have fewer than 2 instances, {sampler} needs "
            f"at least 2 per label: {named}{more}"
        )
    return unique, inverse.reshape(-1), counts


def check_batch_shape(
    labels: Sequence[int] | np.ndarray, n_labels: int, n_instances: int
) -> tuple[np.ndarray, np.ndarray]:
    """Check that ``labels`` can fill balanced batches of ``n_labels`` x ``n_instances``.

    Every label needs 2 items; ``n_labels`` is at most the number of labels and
    ``n_instances`` at most the largest label's count (beyond it, no batch holds distinct
    items of any label: only repeats, and a batch larger than the data). Called at train
    start, before anything is built. Returns ``np.unique``'s inverse and counts.

    >>> check_batch_shape([0, 0, 1, 1, 1], n_labels=2, n_instances=3)[1].tolist()
    [2, 3]
    >>> check_batch_shape([0, 0, 1, 1, 1], n_labels=2, n_instances=100_000)
    Traceback (most recent call last):
    ...
    embedlab.errors.EmbedlabError: train.sampler.n_instances=100000 is more than the 3 items ...
    """
    _check_sizes(n_labels, n_instances)
    unique, inverse, counts = _label_counts(labels, "BalanceSampler")
    if n_labels > unique.size:
        raise EmbedlabError(
            f"train.sampler.n_labels={n_labels} is more than the {unique.size} distinct "
            f"labels in the data; lower train.sampler.n_labels"
        )
    if n_instances > counts.max():
        raise EmbedlabError(
            f"train.sampler.n_instances={n_instances} is more than the {counts.max()} items "
            f"of the largest label in the data; lower train.sampler.n_instances"
        )
    return inverse, counts


class BalanceSampler(RankedBatchSampler):
    """Batch sampler yielding lists of dataset indices: ``n_labels`` labels x ``n_instances`` items.

    Every batch holds exactly ``n_labels`` distinct labels with ``n_instances`` items each,
    grouped label by label. A label with at least ``n_instances`` items contributes distinct
    items; its items are taken from a shuffled cycle so that, over the epoch, each is drawn
    about equally often. A smaller label contributes all of its items plus random repeats.
    Labels themselves are visited in a shuffled cycle, so all labels appear about equally often.

    An epoch has ``max(1, len(labels) // (n_labels * n_instances))`` batches in total over all
    ranks, i.e. it sees about as many items as the dataset has. Every rank builds the same global
    list of batches from a generator seeded with ``(seed, epoch)``; rank ``r`` takes batches
    ``r, r + W, r + 2W, ...`` of it (``W = num_replicas``). With ``drop_last_uneven=True`` the
    list is truncated so that every rank gets ``total // W`` batches; otherwise it is extended to
    ``ceil(total / W)`` per rank. Every rank gets at least one batch. So ranks draw different
    balanced batches, the epoch covers the data once in total, and the same seed reproduces the
    same batches. Call ``set_epoch(epoch)`` before each epoch, like ``DistributedSampler``.

    Pass it to ``DataLoader(dataset, batch_sampler=sampler)`` (not ``sampler=``), and keep
    Lightning from replacing it with a ``DistributedSampler``: the trainer must be built with
    ``use_distributed_sampler=False``, since this sampler already splits batches between ranks.

    Args:
        labels: the label of every dataset item, in dataset order.
        n_labels: distinct labels per batch (``>= 2``).
        n_instances: items per label in a batch (``>= 2``).
        seed: base seed; batches depend only on ``(seed, epoch)``.
        num_replicas: number of ranks ``W``; defaults to the world size of an initialised
            ``torch.distributed`` process group, else 1.
        rank: this process' rank; defaults to the ``torch.distributed`` rank, else 0.
        drop_last_uneven: truncate (``True``) or extend (``False``) the global batch list to a
            multiple of ``W``.

    Example:
        >>> from torch.utils.data import DataLoader
        >>> labels = [0, 0, 0, 1, 1, 2, 2, 2, 2]
        >>> sampler = BalanceSampler(labels, n_labels=2, n_instances=2, seed=0)
        >>> len(sampler)
        2
        >>> batches = list(sampler)
        >>> [sorted({labels[i] for i in batch}) for batch in batches][0] in ([0, 1], [0, 2], [1, 2])
        True
        >>> [len(batch) for batch in batches]
        [4, 4]
        >>> loader = DataLoader(list(range(9)), batch_sampler=sampler)
        >>> [batch.shape[0] for batch in loader]
        [4, 4]
    """

    def __init__(
        self,
        labels: Sequence[int],
        n_labels: int,
        n_instances: int,
        *,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        drop_last_uneven: bool = True,
    ) -> None:
        inverse, counts = check_batch_shape(labels, n_labels, n_instances)
        super().__init__(seed, num_replicas, rank, drop_last_uneven)
        self.n_labels = int(n_labels)
        self.n_instances = int(n_instances)
        self._items = _LabelItems(inverse, counts)
        self.batch_size = self.n_labels * self.n_instances
        self.num_batches_total = max(1, inverse.size // self.batch_size)

    def epoch_state(self) -> Any:
        return _CyclingQueue(np.arange(len(self._items.items_per_label))), {}

    def draw_batch(self, rng: np.random.Generator, state: Any) -> list[int]:
        label_queue, item_queues = state
        batch: list[int] = []
        for label_id in label_queue.draw(rng, self.n_labels).tolist():
            batch.extend(self._items.draw(rng, item_queues, label_id, self.n_instances))
        return batch


class CategoryBalanceSampler(RankedBatchSampler):
    """Batches of ``n_categories`` categories x ``n_labels`` labels x ``n_instances`` items.

    OML's ``CategoryBalanceSampler``: each batch draws ``n_categories`` distinct categories
    (weighted by how many labels they hold, OML's default, so every label is visited about
    equally often), then ``n_labels`` distinct labels of each category (from a shuffled
    cycle per category), then ``n_instances`` items of each label (as
    :class:`BalanceSampler` does: distinct from a shuffled cycle, or all plus repeats). The
    negatives of a batch then come mostly from the same categories: harder than random
    labels on data such as Stanford Online Products, whose categories (bicycle, sofa...)
    group similar products.

    Batches, epoch length (``len(labels) // batch_size`` in all), seeding and the split
    between ranks are :class:`BalanceSampler`'s (:class:`RankedBatchSampler`).

    Args:
        labels: the label of every dataset item, in dataset order.
        categories: the category of every item; each label lies in one category.
        n_categories: categories per batch (``>= 1``, at most the number of categories).
        n_labels: labels per category in a batch (``>= 2``); every category needs as many.
        n_instances: items per label (``>= 2``).
        seed, num_replicas, rank, drop_last_uneven: as in :class:`BalanceSampler`.

    Example:
        >>> labels = [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
        >>> categories = ["a"] * 4 + ["b"] * 4 + ["c"] * 4
        >>> sampler = CategoryBalanceSampler(labels, categories, n_categories=2, n_labels=2,
        ...                                  n_instances=2, seed=0)
        >>> len(sampler), sampler.batch_size
        (1, 8)
        >>> (batch,) = list(sampler)
        >>> len({categories[i] for i in batch}), len({labels[i] for i in batch})
        (2, 4)
        >>> CategoryBalanceSampler(labels, [""] * 12, 1, 2, 2)
        Traceback (most recent call last):
        ...
        embedlab.errors.EmbedlabError: CategoryBalanceSampler needs a category for every item: ...
    """

    def __init__(
        self,
        labels: Sequence[int],
        categories: Sequence[str],
        n_categories: int,
        n_labels: int,
        n_instances: int,
        *,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        drop_last_uneven: bool = True,
    ) -> None:
        unique, inverse, counts = _label_counts(labels, "CategoryBalanceSampler")
        _check_sizes(n_labels, n_instances)
        label_category = _category_of_each_label(inverse, categories, unique)
        names, category_ids, labels_per_category = np.unique(
            label_category, return_inverse=True, return_counts=True
        )
        if not 1 <= n_categories <= names.size:
            raise EmbedlabError(
                f"train.sampler.n_categories={n_categories} must be in [1, {names.size}] "
                f"(the data has {names.size} categories)"
            )
        short = names[labels_per_category < n_labels]
        if short.size:
            named = ", ".join(repr(str(c)) for c in short[:_MAX_NAMED_LABELS])
            raise EmbedlabError(
                f"train.sampler.n_labels={n_labels}: {short.size} categor(ies) have fewer "
                f"labels: {named}; lower train.sampler.n_labels"
            )
        super().__init__(seed, num_replicas, rank, drop_last_uneven)
        self.n_categories = int(n_categories)
        self.n_labels = int(n_labels)
        self.n_instances = int(n_instances)
        self.category_names = [str(c) for c in names]
        self._items = _LabelItems(inverse, counts)
        self._labels_of = [np.flatnonzero(category_ids == c) for c in range(names.size)]
        self._weights = labels_per_category / labels_per_category.sum()
        self.batch_size = self.n_categories * self.n_labels * self.n_instances
        self.num_batches_total = max(1, inverse.size // self.batch_size)

    def epoch_state(self) -> Any:
        return [_CyclingQueue(ids) for ids in self._labels_of], {}

    def draw_batch(self, rng: np.random.Generator, state: Any) -> list[int]:
        label_queues, item_queues = state
        chosen = rng.choice(len(self._labels_of), self.n_categories, replace=False, p=self._weights)
        batch: list[int] = []
        for category in chosen.tolist():
            for label_id in label_queues[category].draw(rng, self.n_labels).tolist():
                batch.extend(self._items.draw(rng, item_queues, label_id, self.n_instances))
        return batch


def _category_of_each_label(
    inverse: np.ndarray, categories: Sequence[str], unique: np.ndarray
) -> np.ndarray:
    """The category of each label id; an item without one, or a label in two, is an error."""
    cats = np.asarray(categories, dtype=object).astype(str)
    if cats.shape != inverse.shape:
        raise EmbedlabError(
            f"CategoryBalanceSampler: {cats.size} categories for {inverse.size} labels"
        )
    missing = int(np.count_nonzero((cats == "") | (cats == "nan")))
    if missing:
        raise EmbedlabError(
            f"CategoryBalanceSampler needs a category for every item: {missing} of "
            f"{cats.size} have none (fill the manifest's 'category' column, or use "
            "train.sampler.name: balance)"
        )
    first_item = np.zeros(unique.size, dtype=np.int64)
    first_item[inverse[::-1]] = np.arange(inverse.size)[::-1]  # each label's first item
    label_category = cats[first_item]
    elsewhere = np.flatnonzero(cats != label_category[inverse])
    if elsewhere.size:
        label = unique[inverse[elsewhere[0]]]
        raise EmbedlabError(
            f"CategoryBalanceSampler: label {label} lies in several categories "
            f"({str(label_category[inverse[elsewhere[0]]])!r}, {str(cats[elsewhere[0]])!r}); "
            "each label "
            "needs one"
        )
    return label_category


def item_categories(frame: pd.DataFrame, where: str) -> np.ndarray:
    """The ``category`` of every row, for :class:`CategoryBalanceSampler`.

    Data without categories is a one-line error naming ``where``.

    >>> item_categories(pd.DataFrame({"category": ["a", "b"]}), "m.csv").tolist()
    ['a', 'b']
    >>> item_categories(pd.DataFrame({"label": [1]}), "m.csv")
    Traceback (most recent call last):
    ...
    embedlab.errors.EmbedlabError: m.csv: train.sampler.name: category_balance needs a ...
    """
    column = frame.get("category")
    if column is None or column.isna().all() or (column.astype(str) == "").all():
        raise EmbedlabError(
            f"{where}: train.sampler.name: category_balance needs a 'category' column with "
            "a category for every row; this data has none (use train.sampler.name: balance)"
        )
    return column.fillna("").astype(str).to_numpy()


class ShardedBatchSampler(Sampler[list[int]]):
    """Evaluation batches of one process, dealt out to ranks: rank ``r`` gets batches ``r::W``.

    The single-process batches (``range(n)`` cut into ``batch_size`` pieces, in order) are
    kept whole, so every rank runs the very same batches a single process would: each item's
    embedding is bit-identical to the single-process one whatever the kernels do with batch
    shapes. The list is padded with repeats of its first batches so that every rank gets
    ``ceil(batches / W)`` of them (a rank with nothing to do would skip the collective that
    gathers the results); gather by the items' ``idx`` and drop the repeats.

    Args:
        size: number of items.
        batch_size: items per batch.
        num_replicas, rank: as in :class:`BalanceSampler` (default: ``torch.distributed``).

    Example:
        >>> [list(ShardedBatchSampler(5, 2, num_replicas=2, rank=r)) for r in (0, 1)]
        [[[0, 1], [4]], [[2, 3], [0, 1]]]
        >>> list(ShardedBatchSampler(3, 2))
        [[0, 1], [2]]
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        *,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise EmbedlabError(f"batch_size must be >= 1, got {batch_size}")
        _resolve_replicas(num_replicas, rank)
        self.size = int(size)
        self.batch_size = int(batch_size)
        self._num_replicas = num_replicas
        self._rank = rank

    def _batches(self) -> list[list[int]]:
        return [
            list(range(start, min(start + self.batch_size, self.size)))
            for start in range(0, self.size, self.batch_size)
        ]

    def __len__(self) -> int:
        num_replicas, _ = _resolve_replicas(self._num_replicas, self._rank)
        return math.ceil(math.ceil(self.size / self.batch_size) / num_replicas)

    def __iter__(self) -> Iterator[list[int]]:
        num_replicas, rank = _resolve_replicas(self._num_replicas, self._rank)
        batches = self._batches()
        if not batches:
            return
        padded = len(self) * num_replicas
        batches += [batches[i % len(batches)] for i in range(padded - len(batches))]
        yield from batches[rank::num_replicas]


def _resolve_replicas(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    """Fill in world size and rank from ``torch.distributed`` when initialised, else 1 and 0."""
    initialised = dist.is_available() and dist.is_initialized()
    if num_replicas is None:
        num_replicas = dist.get_world_size() if initialised else 1
    if rank is None:
        rank = dist.get_rank() if initialised else 0
    if num_replicas < 1:
        raise EmbedlabError(f"BalanceSampler num_replicas must be >= 1, got {num_replicas}")
    if not 0 <= rank < num_replicas:
        raise EmbedlabError(
            f"BalanceSampler rank must be in [0, {num_replicas - 1}] for "
            f"num_replicas={num_replicas}, got {rank}"
        )
    return int(num_replicas), int(rank)
