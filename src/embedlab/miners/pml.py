"""pytorch-metric-learning miners behind embedlab's miner interfaces, and their statistics.

:class:`PmlMiner` wraps any PML miner (``train.miner.name: pml.BatchHardMiner``). It gives
its own output (pairs or triplets) to PML losses, pairs to our pair losses and the memory
bank, triplets to our triplet loss, converting the way PML's losses convert a miner's
output, so a loss sees what it would see in PML. PML is imported by whoever builds the
PML miner (the registry), never here.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from embedlab.miners.pairs import PairMiner, Pairs, pairs_to_triplets, triplets_to_pairs
from embedlab.miners.triplets import Triplets

IndicesTuple = Pairs | Triplets


def recorded_stats(module: Any, prefix: str = "") -> dict[str, float]:
    """The statistics a PML module recorded in its last call (built with ``collect_stats``).

    PML lists them in ``_record_these_stats``; non-numbers and non-finite values are left
    out, so nothing but finite floats reaches a tracker.

    >>> class Recorded:
    ...     _record_these_stats = ["num_triplets", "pos_pair_dist", "note"]
    ...     num_triplets, pos_pair_dist, note = 12, torch.tensor(0.5), "x"
    >>> recorded_stats(Recorded(), "miner_")
    {'miner_num_triplets': 12.0, 'miner_pos_pair_dist': 0.5}
    """
    stats: dict[str, float] = {}
    for name in getattr(module, "_record_these_stats", None) or []:
        value = getattr(module, name, None)
        if isinstance(value, Tensor):
            if value.numel() != 1:
                continue
            value = value.item()
        try:
            number = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            stats[f"{prefix}{name}"] = number
    return stats


def miner_logs(miner: Any) -> dict[str, float]:
    """A miner's ``last_logs`` as ``miner_<stat>`` (empty for miners that keep none).

    >>> miner_logs(None)
    {}
    """
    logs = getattr(miner, "last_logs", None) or {}
    return {f"miner_{key}": value for key, value in logs.items()}


class PmlMiner(PairMiner):
    """A pytorch-metric-learning miner as an embedlab miner.

    - :meth:`indices`: the PML miner's own output, pairs ``(a1, p, a2, n)`` or triplets
      ``(a, p, n)`` (what a PML loss takes as ``indices_tuple``);
    - :meth:`mine`: pairs (a triplet's positive and negative pair, PML's
      ``convert_to_pairs``), for our pair losses and the memory bank;
    - :meth:`sample`: triplets (pairs joined on their anchor, PML's
      ``convert_to_triplets``), for :class:`~embedlab.losses.TripletLossWithMiner`.

    ``last_logs`` holds the PML miner's statistics of the last call (build it with
    ``collect_stats=True``).

    Args:
        miner: a PML miner (``pytorch_metric_learning.miners.BatchHardMiner()``...).

    Example:
        >>> from pytorch_metric_learning.miners import BatchHardMiner
        >>> miner = PmlMiner(BatchHardMiner(collect_stats=True))
        >>> x = torch.tensor([[0.0, 1.0], [0.0, 0.9], [1.0, 0.0], [0.9, 0.1]])
        >>> anchors, positives, negatives = miner.sample(x, torch.tensor([0, 0, 1, 1]))
        >>> positives.tolist(), negatives.tolist()
        ([1, 0, 3, 2], [3, 3, 0, 0])
        >>> miner.last_logs["num_triplets"]
        4.0
    """

    def __init__(self, miner: torch.nn.Module) -> None:
        self.miner = miner
        self.last_logs: dict[str, float] = {}

    def __repr__(self) -> str:
        return f"PmlMiner({self.miner!r})"

    def indices(
        self,
        features: Tensor,
        labels: Tensor,
        ref_features: Tensor | None = None,
        ref_labels: Tensor | None = None,
    ) -> IndicesTuple:
        """The PML miner's output on the batch (against a reference set, if given)."""
        out = self.miner(features, labels, ref_features, ref_labels)
        self.last_logs = recorded_stats(self.miner)
        return tuple(out)  # type: ignore[return-value]

    def mine(
        self,
        features: Tensor,
        labels: Tensor,
        ref_features: Tensor | None = None,
        ref_labels: Tensor | None = None,
    ) -> Pairs:
        found = self.indices(features, labels, ref_features, ref_labels)
        return triplets_to_pairs(found) if len(found) == 3 else found  # type: ignore[arg-type,return-value]

    def sample(self, features: Tensor, labels: Tensor) -> Triplets:
        found = self.indices(features, labels)
        return found if len(found) == 3 else pairs_to_triplets(found)  # type: ignore[arg-type,return-value]
