"""The symmetric path of :func:`embedlab.retrieval.knn`: the queries are the gallery.

The ``N x N`` distance matrix is then symmetric, so only its upper triangle is computed,
in ``side x side`` tiles. Tile ``(i, j)`` with ``i < j`` feeds the running top k of the
rows of chunk ``i`` (its rows) and of chunk ``j`` (its columns); a diagonal tile feeds its
own rows. Each item keeps a running top k sorted by (distance, index), so the result
obeys the ordering contract of ``knn`` whatever the tile size.

Merging is cheap once a row holds k candidates: a tile entry can only enter the row's
list if it is ``<=`` the row's current k-th distance (``<=`` keeps exact ties, which the
merge resolves by index), and after the first tile few entries pass. The first tile a
chunk sees is reduced by a full top-k instead.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from embedlab.retrieval.distance import DEFAULT_CHUNK_BYTES
from embedlab.retrieval.exclusion import KeyMatcher
from embedlab.retrieval.topk import finish_distances, sort_by_value_then_index, topk_stable

__all__ = ["knn_symmetric", "tile_side"]

#: Largest number of excluded pairs kept as an explicit list (else masks are dense per tile).
MAX_EXCLUDED_PAIRS = 2**23
#: Largest tile side picked automatically: larger tiles do not run faster.
MAX_AUTO_SIDE = 2048


def tile_side(n_items: int, budget_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """Side of the square float32 tiles that fit the budget (at most 2048).

    Example:
        >>> tile_side(100_000), tile_side(100_000, budget_bytes=2**20)
        (2048, 512)
    """
    return max(1, min(MAX_AUTO_SIDE, math.isqrt(budget_bytes // 4), max(1, n_items)))


class _Tiles:
    """The items cut in chunks of ``side`` rows, the last one zero-padded to ``side``.

    Every tile product then has the same shape, so the BLAS picks the same kernel for
    all of them and a dot product comes out the same wherever it is computed (a
    1-row or tiny last chunk would otherwise take a matrix-vector path that rounds
    differently, and duplicate items would no longer tie exactly).
    """

    def __init__(self, x: Tensor, norms: Tensor | None, side: int) -> None:
        self.x, self.norms, self.side = x, norms, side
        self.n_items = x.shape[0]
        self.n_chunks = -(-self.n_items // side)
        last = (self.n_chunks - 1) * side
        self.last_x = torch.zeros(side, x.shape[1], dtype=x.dtype, device=x.device)
        self.last_x[: self.n_items - last] = x[last:]
        self.last_norms = None
        if norms is not None:
            self.last_norms = torch.zeros(side, dtype=norms.dtype, device=norms.device)
            self.last_norms[: self.n_items - last] = norms[last:]

    def size(self, chunk: int) -> int:
        return min(self.side, self.n_items - chunk * self.side)

    def _chunk(self, chunk: int) -> tuple[Tensor, Tensor | None]:
        if chunk == self.n_chunks - 1:
            return self.last_x, self.last_norms
        rows = slice(chunk * self.side, (chunk + 1) * self.side)
        return self.x[rows], None if self.norms is None else self.norms[rows]

    def block(self, i: int, j: int) -> Tensor:
        """Tile ``(i, j)`` (``i <= j``) of the distance matrix (squared for euclidean).

        ``(|a|^2 + |b|^2) - 2 a.b`` (``1 - u_a.u_b`` for cosine) rounds the same way for
        ``(a, b)`` and ``(b, a)``: the sum of the norms commutes and the dot product is
        the same sum of the same products.
        """
        x_i, n_i = self._chunk(i)
        x_j, n_j = self._chunk(j)
        if n_i is None or n_j is None:
            block = torch.ones(self.side, self.side, dtype=x_i.dtype, device=x_i.device)
            block.addmm_(x_i, x_j.T, alpha=-1)
        else:
            block = n_i.unsqueeze(1) + n_j.unsqueeze(0)
            block.addmm_(x_i, x_j.T, alpha=-2)
        return block[: self.size(i), : self.size(j)]


class _RunningTopK:
    """Per item, the k smallest (value, index) pairs seen so far, sorted by (value, index)."""

    def __init__(self, n_items: int, k: int, device: torch.device) -> None:
        self.k = k
        self.values = torch.full((n_items, k), math.inf, dtype=torch.float32, device=device)
        self.indices = torch.full((n_items, k), -1, dtype=torch.int64, device=device)

    def threshold(self, start: int, stop: int) -> Tensor:
        """Current k-th value of rows ``start:stop``; finite, so inf (excluded) never passes."""
        return self.values[start:stop, -1].clamp(max=torch.finfo(torch.float32).max)

    def merge_dense(self, start: int, values: Tensor, indices: Tensor) -> None:
        """Merge a sorted ``[m, k']`` candidate list into rows ``start:start + m``."""
        stop = start + values.shape[0]
        merged_values, merged_indices = sort_by_value_then_index(
            torch.cat([self.values[start:stop], values], dim=1),
            torch.cat([self.indices[start:stop], indices], dim=1),
        )
        self.values[start:stop] = merged_values[:, : self.k]
        self.indices[start:stop] = merged_indices[:, : self.k]

    def merge_sparse(self, start: int, rows: Tensor, values: Tensor, indices: Tensor) -> None:
        """Merge scattered candidates ``(start + rows[t], indices[t]) = values[t]``.

        ``rows`` must be sorted, and within a row the candidates' indices ascending and
        larger than every index already held (tiles are fed in column-chunk order):
        then the concatenation ``[held, new]`` is in (row, index) order and two stable
        sorts, by value then by row, give the (row, value, index) order.
        """
        touched, counts = torch.unique_consecutive(rows, return_counts=True)
        group = torch.repeat_interleave(torch.arange(touched.shape[0], device=rows.device), counts)
        touched += start
        n_touched, k = touched.shape[0], self.k
        held_groups = torch.arange(n_touched, device=rows.device).repeat_interleave(k)
        all_groups = torch.cat([held_groups, group])
        all_values = torch.cat([self.values[touched].reshape(-1), values])
        all_indices = torch.cat([self.indices[touched].reshape(-1), indices])
        order = torch.sort(all_values, stable=True).indices
        order = order[torch.sort(all_groups[order], stable=True).indices]
        first = torch.cumsum(counts + k, dim=0) - (counts + k)
        keep = order[(first.unsqueeze(1) + torch.arange(k, device=rows.device)).reshape(-1)]
        self.values[touched] = all_values[keep].view(n_touched, k)
        self.indices[touched] = all_indices[keep].view(n_touched, k)


class _TileExclusions:
    """Excluded pairs (same id, same sequence) of each upper-triangle tile.

    Pairs are listed once, bucketed by tile; when there are too many (huge sequences) a
    dense comparison is done per tile instead.
    """

    def __init__(self, matchers: list[KeyMatcher], n_items: int, side: int) -> None:
        self.side = side
        self.n_chunks = -(-n_items // side)
        self.dense: list[KeyMatcher] = []
        rows_parts: list[Tensor] = []
        cols_parts: list[Tensor] = []
        n_listed = 0
        for matcher in matchers:
            if not matcher.active:
                continue
            total = sum(
                int(matcher.count_pairs(s, min(s + side, n_items))[2].sum())
                for s in range(0, n_items, side)
            )
            if n_listed + total > MAX_EXCLUDED_PAIRS:
                self.dense.append(matcher)
                continue
            n_listed += total
            for start in range(0, n_items, side):
                rows, cols = matcher.pairs(start, min(start + side, n_items))
                rows = rows + start
                upper = rows // side <= cols // side
                rows_parts.append(rows[upper])
                cols_parts.append(cols[upper])
        active = [m for m in matchers if m.active]
        device = active[0].query_keys.device if active else None
        if rows_parts:
            rows = torch.cat(rows_parts)
            cols = torch.cat(cols_parts)
            tile = (rows // side) * self.n_chunks + cols // side
            order = torch.sort(tile, stable=True).indices
            self.rows, self.cols = rows[order], cols[order]
            counts = torch.bincount(tile, minlength=self.n_chunks**2)
            self.offsets = torch.cat(
                [torch.zeros(1, dtype=torch.int64, device=device), counts.cumsum(0)]
            )
            self.offsets_list = self.offsets.tolist()
        else:
            self.offsets_list = []

    def apply(self, block: Tensor, i: int, j: int) -> None:
        """Set the excluded entries of tile ``(i, j)`` to inf."""
        side = self.side
        if self.offsets_list:
            tile = i * self.n_chunks + j
            lo, hi = self.offsets_list[tile], self.offsets_list[tile + 1]
            if hi > lo:
                rows = self.rows[lo:hi] - i * side
                cols = self.cols[lo:hi] - j * side
                block[rows.to(block.device), cols.to(block.device)] = math.inf
        for matcher in self.dense:
            row_stop = i * side + block.shape[0]
            cols = slice(j * side, j * side + block.shape[1])
            block.masked_fill_(matcher.dense(i * side, row_stop, cols).to(block.device), math.inf)


def _feed(
    state: _RunningTopK,
    block: Tensor,
    row_start: int,
    col_start: int,
    *,
    transposed: bool,
    first: bool,
) -> None:
    """Update the running top k of the block's rows (or, ``transposed``, of its columns)."""
    view = block.T if transposed else block
    n_rows, n_cols = view.shape
    if not first:
        kth = state.threshold(row_start, row_start + n_rows)
        # Compare in the block's own layout: a mask with transposed strides makes
        # nonzero several times slower.
        passing = block <= (kth.unsqueeze(0) if transposed else kth.unsqueeze(1))
        n_passing = int(passing.count_nonzero())
        if n_passing == 0:
            return
        if n_passing <= view.numel() // 32:
            # nonzero is row-major: rows sorted, columns ascending within a row.
            a, b = torch.nonzero(passing, as_tuple=True)
            values = block[a, b]
            rows, cols = a, b
            if transposed:
                order = torch.sort(b, stable=True).indices
                rows, cols, values = b[order], a[order], values[order]
            state.merge_sparse(row_start, rows, values, cols + col_start)
            return
    values, indices = topk_stable(view.contiguous() if transposed else view, min(state.k, n_cols))
    state.merge_dense(row_start, values, indices + col_start)


def knn_symmetric(
    items: Tensor,
    k: int,
    metric: str,
    chunk_size: int | None,
    exclusions: list[KeyMatcher],
    *,
    progress: bool = False,
) -> tuple[Tensor, Tensor]:
    """k nearest other items of every item (``knn(items, items, ...)``) over the upper triangle.

    Args:
        items: ``[N, D]`` embeddings, queries and gallery at once.
        k: neighbours per item (the surplus over ``N`` is padding).
        metric: ``"euclidean"`` or ``"cosine"``.
        chunk_size: tile side; ``None`` picks it from the 256 MiB budget (see `tile_side`).
        exclusions: key matchers whose matching pairs are not admissible (self, sequence).
        progress: show a progress bar over the tiles.

    Returns:
        ``(distances [N, k], indices [N, k])`` as :func:`~embedlab.retrieval.knn` returns.

    Example:
        >>> x = torch.tensor([[0.0], [1.0], [3.0], [1.0]])
        >>> d, i = knn_symmetric(x, 2, "euclidean", chunk_size=3, exclusions=[
        ...     KeyMatcher(torch.arange(4), torch.arange(4), "ids", 4, 4, ignore_negative=False)])
        >>> i
        tensor([[1, 3],
                [3, 0],
                [1, 3],
                [1, 0]])
        >>> d
        tensor([[1., 1.],
                [0., 1.],
                [2., 2.],
                [0., 1.]])
    """
    n_items = items.shape[0]
    device = items.device
    out_dist = torch.full((n_items, k), math.inf, dtype=torch.float32, device=device)
    out_idx = torch.full((n_items, k), -1, dtype=torch.int64, device=device)
    if n_items == 0:
        return out_dist, out_idx
    x = items.detach().to(torch.float32)
    norms = None
    if metric == "cosine":
        x = F.normalize(x, dim=1)
    else:
        norms = x.pow(2).sum(dim=1)
    side = min(chunk_size or tile_side(n_items), n_items)
    tiles = _Tiles(x, norms, side)
    n_chunks = tiles.n_chunks
    k_eff = min(k, n_items)
    state = _RunningTopK(n_items, k_eff, device)
    excluded = _TileExclusions(exclusions, n_items, side)
    seen = [False] * n_chunks
    pairs = [(i, j) for i in range(n_chunks) for j in range(i, n_chunks)]
    if progress:
        from tqdm.auto import tqdm

        pairs = tqdm(pairs, desc="kNN (symmetric)", unit="tile", leave=False)
    strict_lower = None
    for i, j in pairs:
        block = tiles.block(i, j)
        excluded.apply(block, i, j)
        if i == j:
            # A diagonal tile holds both (a, b) and (b, a): keep the upper triangle only
            # and feed it both ways, so each pair is one number. Columns first: for every
            # row the tiles then arrive in ascending column order (see merge_sparse).
            if strict_lower is None or strict_lower.shape != block.shape:
                strict_lower = torch.ones_like(block, dtype=torch.bool).tril_(-1)
            block.masked_fill_(strict_lower, math.inf)
            diagonal = block.diagonal().clone()
            block.diagonal().fill_(math.inf)
            _feed(state, block, i * side, i * side, transposed=True, first=not seen[i])
            seen[i] = True
            block.diagonal().copy_(diagonal)
            _feed(state, block, i * side, i * side, transposed=False, first=False)
        else:
            _feed(state, block, j * side, i * side, transposed=True, first=not seen[j])
            seen[j] = True
            _feed(state, block, i * side, j * side, transposed=False, first=not seen[i])
            seen[i] = True
        del block  # before the next tile allocates its own
    dist, idx = finish_distances(state.values, state.indices, metric)
    out_dist[:, :k_eff] = dist
    out_idx[:, :k_eff] = idx
    return out_dist, out_idx
