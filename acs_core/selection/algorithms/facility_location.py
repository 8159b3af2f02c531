"""CRAIG's facility location: lazy-greedy k medoids of gradient rows, weighted by cluster size.

`facility_location` maximises F(A) = sum_i max_{j in A} S_ji on S = max(D) - D, D = squared Euclidean distances
between rows (dense S when it fits, else rows recomputed on demand); `facility_location_lazy` runs the same exact
lazy greedy on any given dense similarity (the zoo's cosine kernel). Weights are cluster sizes.

Why the shift M = max(D) does not change the greedy picks (so any M >= max(D) would do; we use the exact
max anyway, because the objective value F is defined with it):
with S = M - D >= 0 and F(empty) = 0 the first gain of j is sum_i (M - D_ji) = n*M - sum_i D_ji, whose
argmax is argmin_j sum_i D_ji for every M; after the first pick cur_i = M - min_{s in A} D_si, so the gain
of j is sum_i max(0, min_{s in A} D_si - D_ji), in which M cancels. A shift M' < max(D) makes some S_ij
negative, the first gains become sum_i max(0, M' - D_ji) and the first pick can change: not allowed.
"""
from __future__ import annotations

import heapq
from typing import Callable

import torch

from ..rows import DenseRows
from .numerics import BLOCK_ELEMS, DENSE_BYTES, check_k, compute_dtype, loop_threads

# Up to this many feature dimensions, squared distances are computed in float64 (then rounded).
_F64_DIST_MAX_DIMS = 64
# Fixed column chunk for gain sums, so a candidate's gain never depends on how candidates are batched.
_GAIN_CHUNK = 8192


def _default_chunk(n: int, chunk: int | None) -> int:
    """Rows per distance block: the caller's value, else enough rows for about 16M elements per block."""
    if chunk is not None:
        if chunk <= 0:
            raise ValueError(f"chunk must be positive, got {chunk}")
        return chunk
    return max(1, min(n, BLOCK_ELEMS // max(n, 1)))


class _Points:
    """Rows prepared for squared-distance blocks via ||a||^2 + ||b||^2 - 2 a.b on centred rows.

    Centring leaves distances unchanged and shrinks the cancellation error of the norm trick. With at
    most 64 dimensions the blocks are computed in float64 (cheap there) and then rounded to the compute
    dtype, so duplicate rows and re-computed rows agree to the last float32 bit in practice.
    """

    def __init__(self, features: torch.Tensor) -> None:
        if features.dim() != 2:
            raise ValueError(f"features must be (n, d), got shape {tuple(features.shape)}")
        if not DenseRows(features).all_finite():
            raise ValueError("features contain NaN or inf")
        self.dtype = compute_dtype(features)
        work = torch.float64 if features.shape[1] <= _F64_DIST_MAX_DIMS else self.dtype
        x = features.detach().to(device="cpu", dtype=work)
        self.x = (x - x.mean(dim=0, keepdim=True)).contiguous()
        self.sq = (self.x * self.x).sum(dim=1)
        self.n = x.shape[0]

    def sq_dists(self, rows: torch.Tensor) -> torch.Tensor:
        """Squared distances D[rows, :] (len(rows), n), clamped at 0, with D[j, j] = 0 exactly."""
        out = torch.addmm(self.sq[None, :], self.x[rows], self.x.T, alpha=-2.0)
        out.add_(self.sq[rows, None]).clamp_(min=0.0)
        out[torch.arange(len(rows)), rows] = 0.0
        return out.to(self.dtype)

    def max_dist(self, chunk: int) -> float:
        """Exact max(D) over all pairs, computed in row blocks."""
        m = 0.0
        for s in range(0, self.n, chunk):
            rows = torch.arange(s, min(s + chunk, self.n))
            m = max(m, float(self.sq_dists(rows).max()))
        return m


def craig_similarity(features: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    """Dense CRAIG similarity S = max(D) - D (n, n), one `chunk`-row block of distances at a time, shifted in
    place; float32 unless float64 input."""
    pts = _Points(features)
    n = pts.n
    chunk = _default_chunk(n, chunk)
    sim = torch.empty(n, n, dtype=pts.dtype)
    for s in range(0, n, chunk):
        rows = torch.arange(s, min(s + chunk, n))
        sim[s : s + len(rows)] = pts.sq_dists(rows)
    if n:
        m = sim.max()
        sim.neg_().add_(m)
    return sim


def _gains(rows: torch.Tensor, cur: torch.Tensor) -> torch.Tensor:
    """Marginal gains sum_i max(0, rows[b, i] - cur[i]) in float64, summed in fixed column chunks.

    The fixed chunking makes a candidate's gain bitwise identical however candidates are batched, and
    since cur only grows, each term (and so each gain) is numerically non-increasing: the lazy bounds hold.
    """
    n = rows.shape[1]
    if n <= _GAIN_CHUNK:
        return (rows - cur).clamp_(min=0.0).sum(dim=1, dtype=torch.float64)
    total = torch.zeros(rows.shape[0], dtype=torch.float64)
    for s in range(0, n, _GAIN_CHUNK):
        total += (rows[:, s : s + _GAIN_CHUNK] - cur[s : s + _GAIN_CHUNK]).clamp_(min=0.0).sum(
            dim=1, dtype=torch.float64
        )
    return total


class _Assignment:
    """Tracks cur_i = max_{j in A} S_ji and which pick serves each point (ties: the earliest pick)."""

    def __init__(self, n: int, dtype: torch.dtype) -> None:
        self.cur = torch.zeros(n, dtype=dtype)
        self.owner = torch.zeros(n, dtype=torch.int64)
        self.picks: list[int] = []

    def add(self, j: int, row: torch.Tensor) -> None:
        """Record pick j whose similarity row is `row`; a point moves only on a strict improvement."""
        t = len(self.picks)
        if t == 0:
            self.owner.zero_()
            self.cur = row.clone()
        else:
            better = row > self.cur
            self.owner[better] = t
            self.cur = torch.maximum(self.cur, row)
        self.picks.append(j)

    def result(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(indices int64, cluster sizes) with every chosen row counted in its own cluster."""
        idx = torch.tensor(self.picks, dtype=torch.int64)
        if len(self.picks) == 0:
            return idx, torch.zeros(0, dtype=dtype)
        owner = self.owner.clone()
        owner[idx] = torch.arange(len(self.picks))  # a chosen row is its own medoid (matters for duplicates)
        weights = torch.bincount(owner, minlength=len(self.picks)).to(dtype)
        return idx, weights


def _as_similarity(similarity: torch.Tensor, k: int) -> tuple[torch.Tensor, int, int, torch.dtype]:
    """A checked, contiguous CPU copy of a dense similarity (float64 kept, else float32), its shape and dtype."""
    sim = similarity.detach().cpu()
    if sim.dim() != 2:
        raise ValueError("similarity must be a matrix")
    m, n = sim.shape
    check_k(k, m)
    dtype = sim.dtype if sim.dtype == torch.float64 else torch.float32
    return sim.to(dtype).contiguous(), m, n, dtype


def _lazy_greedy(
    n: int,
    k: int,
    rows_of: Callable[[list[int]], torch.Tensor],
    row_of: Callable[[int], torch.Tensor],
    dtype: torch.dtype,
    chunk: int,
    max_batch: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lazy greedy over candidates 0..n-1 whose similarity rows come from rows_of / row_of.

    Stale gains sit in a heap keyed (-bound, index, step evaluated). The top is taken only once its gain
    is fresh (evaluated at this step): every other bound is then <= it (equal only with a higher index),
    and bounds never fall below true gains (submodularity, and `_gains` is numerically monotone), so the
    pick is the lowest-index argmax of the true gains - the plain greedy pick. Stale tops are refreshed in
    rounds of 1, 2, 4, ... up to max_batch candidates to amortise the per-call overhead.
    """
    state = _Assignment(n, dtype)
    heap: list[tuple[float, int, int]] = []
    for s in range(0, n, chunk):
        ids = list(range(s, min(s + chunk, n)))
        g = _gains(rows_of(ids), state.cur).tolist()
        heap.extend((-gj, j, 0) for gj, j in zip(g, ids))
    heapq.heapify(heap)
    with loop_threads():
        for step in range(k):
            size = 1
            while heap[0][2] != step:
                ids = []
                while heap and len(ids) < size and heap[0][2] != step:
                    ids.append(heapq.heappop(heap)[1])
                g = _gains(rows_of(ids), state.cur).tolist()
                for gj, j in zip(g, ids):
                    heapq.heappush(heap, (-gj, j, step))
                size = min(2 * size, max_batch)
            _, j, _ = heapq.heappop(heap)
            state.add(j, row_of(j))
    return state.result(dtype)


def facility_location_lazy(
    similarity: torch.Tensor, k: int, *, max_batch: int = 128
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lazy greedy on a given dense similarity (row j = how well j represents each point; S >= 0).

    Same picks and weights as the plain greedy that re-evaluates every gain at every step, at a fraction of
    the gain evaluations;
    `facility_location` uses it on the CRAIG similarity, and callers with their own kernel can too.
    """
    sim, m, n, dtype = _as_similarity(similarity, k)
    if k == 0:
        return torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=dtype)

    def rows_of(idx: list[int]) -> torch.Tensor:
        return sim.index_select(0, torch.tensor(idx, dtype=torch.int64))

    def row_of(j: int) -> torch.Tensor:
        return sim[j]

    return _lazy_greedy(m, k, rows_of, row_of, dtype, _default_chunk(n, None), max_batch)


def facility_location(
    features: torch.Tensor,
    k: int,
    chunk: int | None = None,
    *,
    dense_bytes: int = DENSE_BYTES,
    max_batch: int = 128,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CRAIG: pick k medoid rows maximising F = sum_i max_{j in A} (max(D) - D_ji) by lazy greedy.

    Returns (indices int64 in pick order, weights = cluster sizes, summing to n; a chosen row always
    counts in its own cluster, other ties go to the earlier pick). The picks are exactly the plain
    greedy picks (lowest index wins ties) - see `_lazy_greedy`.

    Memory: when n^2 * itemsize <= dense_bytes (1 GiB: n <= 16,384 in float32) the similarity is built
    once (`craig_similarity`), in `chunk`-row blocks (float32 unless the features are float64). Otherwise nothing n x n is
    kept: a length-n "current best" vector plus `chunk` x n blocks; similarity rows are recomputed from
    the features on demand, after one extra pass that finds the exact max(D). Recomputed rows match to
    the last bit in practice (float64 distances for d <= 64); for larger d an ulp of GEMM rounding could
    in principle reorder a near-tie. Both paths also keep one centred copy of the features
    (float64 for d <= 64), so budget n * d * itemsize on top of the caller's tensor.
    """
    n = features.shape[0]
    if n * n * torch.empty(0, dtype=compute_dtype(features)).element_size() <= dense_bytes:
        return facility_location_lazy(craig_similarity(features, chunk), k, max_batch=max_batch)
    pts = _Points(features)
    check_k(k, n)
    if k == 0:
        return torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=pts.dtype)
    chunk = _default_chunk(n, chunk)
    big_m = pts.max_dist(chunk)

    def rows_of(idx: list[int]) -> torch.Tensor:
        return pts.sq_dists(torch.tensor(idx, dtype=torch.int64)).neg_().add_(big_m)

    def row_of(j: int) -> torch.Tensor:
        return rows_of([j])[0]

    return _lazy_greedy(n, k, rows_of, row_of, pts.dtype, chunk, max_batch)

