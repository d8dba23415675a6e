"""Class-balanced batch sampler for metric learning, aware of distributed training."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
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
    unique, inverse, counts = np.unique(np.asarray(labels), return_inverse=True, return_counts=True)
    too_small = unique[counts < 2]
    if too_small.size:
        named = ", ".join(str(label) for label in too_small[:_MAX_NAMED_LABELS])
        more = ", ..." if too_small.size > _MAX_NAMED_LABELS else ""
        raise EmbedlabError(
            f"{too_small.size} label(s) have fewer than 2 instances, BalanceSampler needs "
            f"at least 2 per label: {named}{more}"
        )
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


class BalanceSampler(Sampler[list[int]]):
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
        label_array = np.asarray(labels)
        if label_array.ndim != 1 or label_array.size == 0:
            raise EmbedlabError(
                f"BalanceSampler needs a non-empty 1-D sequence of labels, got shape "
                f"{label_array.shape}"
            )
        inverse, counts = check_batch_shape(label_array, n_labels, n_instances)

        _resolve_replicas(num_replicas, rank)  # fail early on a bad explicit rank
        self.n_labels = int(n_labels)
        self.n_instances = int(n_instances)
        self.seed = int(seed)
        # None = ask torch.distributed at iteration time: Lightning builds the loader before it
        # starts the process group (and ddp_spawn pickles it into the workers).
        self._num_replicas = num_replicas
        self._rank = rank
        self.drop_last_uneven = drop_last_uneven
        self.epoch = 0

        # Dataset positions grouped by label id (label ids index ``unique``).
        by_label = np.argsort(inverse, kind="stable")
        self._items_per_label: list[np.ndarray] = np.split(by_label, np.cumsum(counts)[:-1])

        self.batch_size = self.n_labels * self.n_instances
        self.num_batches_total = max(1, label_array.size // self.batch_size)

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
        label_queue = _CyclingQueue(np.arange(len(self._items_per_label)))
        item_queues: dict[int, _CyclingQueue] = {}
        batches: list[list[int]] = []
        for _ in range(self.num_batches_per_rank * self.num_replicas):
            batch: list[int] = []
            for label_id in label_queue.draw(rng, self.n_labels).tolist():
                items = self._items_per_label[label_id]
                if items.size < self.n_instances:
                    repeats = rng.choice(items, self.n_instances - items.size, replace=True)
                    chosen = np.concatenate([rng.permutation(items), repeats])
                else:
                    queue = item_queues.setdefault(label_id, _CyclingQueue(items))
                    chosen = queue.draw(rng, self.n_instances)
                batch.extend(chosen.tolist())
            batches.append(batch)
        return batches


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
