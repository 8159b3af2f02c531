"""Greedy coreset solvers behind adversarial coreset selection: CRAIG and GradMatch, plus their helpers.

Pure functions on tensors (no model code), so every selector can call them on whatever gradients it
extracted (clean or adversarial, per class or global) and tests can check them against brute force.

* `facility_location` - CRAIG: lazy-greedy facility location on S = max(D) - D, D = squared Euclidean
  distances between rows; weights = cluster sizes.
* `omp_nnls` - GradMatch: orthogonal matching pursuit toward the summed gradient with a true
  non-negative (optionally ridge) least-squares refit after every pick.
* `fill_random`, `class_budgets`, `matching_error` - the glue both solvers need.

Why the shift M = max(D) does not change the greedy picks (so any M >= max(D) would do; we use the exact
max anyway, because the objective value reported by `facility_location_value` is defined with it):
with S = M - D >= 0 and F(empty) = 0 the first gain of j is sum_i (M - D_ji) = n*M - sum_i D_ji, whose
argmax is argmin_j sum_i D_ji for every M; after the first pick cur_i = M - min_{s in A} D_si, so the gain
of j is sum_i max(0, min_{s in A} D_si - D_ji), in which M cancels. A shift M' < max(D) makes some S_ij
negative, the first gains become sum_i max(0, M' - D_ji) and the first pick can change: not allowed.
"""
from __future__ import annotations

import contextlib
import heapq
import math
from typing import Callable, Iterator

import numpy as np
import scipy.linalg
import torch
from scipy.linalg import blas as _blas
from threadpoolctl import threadpool_limits

from .rows import DenseRows, Rows, as_rows

__all__ = [
    "class_budgets",
    "craig_similarity",
    "facility_location",
    "facility_location_greedy_plain",
    "facility_location_lazy",
    "facility_location_value",
    "fill_random",
    "matching_error",
    "omp_nnls",
]

# Up to this many feature dimensions, squared distances are computed in float64 (then rounded).
_F64_DIST_MAX_DIMS = 64
# Fixed column chunk for gain sums, so a candidate's gain never depends on how candidates are batched.
_GAIN_CHUNK = 8192
# Default budget for CRAIG's dense similarity (and OMP's Gram matrix) before falling back to recomputation.
_DENSE_BYTES = 1 << 30
# Row-block size (elements) for chunked distance / matrix-vector work.
_BLOCK_ELEMS = 1 << 24


@contextlib.contextmanager
def _loop_threads(num: int = 1) -> Iterator[None]:
    """Run the greedy loops' many small tensor and BLAS ops on `num` threads (torch and numpy/scipy's BLAS),
    then restore the settings.

    Each small op otherwise pays a fork/join barrier; on a loaded 2-core machine we measured 8 ms per
    640k-element op with 2 threads against 0.1 ms with 1, and GradMatch's factor solves ran 1.5x faster on
    one OpenBLAS thread. The big one-off GEMMs run outside this block. The setting is process-wide: torch
    and BLAS work in other Python threads also runs on one thread meanwhile.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(num)
    try:
        with threadpool_limits(limits=num, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(before)


# --------------------------------------------------------------------------------------------------------
# CRAIG: facility location
# --------------------------------------------------------------------------------------------------------
def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """float64 stays float64 (tests, exactness); everything else is computed in float32 for speed."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _default_chunk(n: int, chunk: int | None) -> int:
    """Rows per distance block: the caller's value, else enough rows for about 16M elements per block."""
    if chunk is not None:
        if chunk <= 0:
            raise ValueError(f"chunk must be positive, got {chunk}")
        return chunk
    return max(1, min(n, _BLOCK_ELEMS // max(n, 1)))


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
        self.dtype = _compute_dtype(features)
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
    """Dense CRAIG similarity S = max(D) - D (n, n) in `chunk`-row blocks; float32 unless float64 input."""
    pts = _Points(features)
    return _dense_similarity(pts, _default_chunk(pts.n, chunk))


def _dense_similarity(pts: _Points, chunk: int) -> torch.Tensor:
    """S = max(D) - D for prepared points, one block of distances at a time, shifted in place."""
    n = pts.n
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


def _check_k(k: int, n: int) -> None:
    """Budgets must lie in [0, n]."""
    if k < 0 or k > n:
        raise ValueError(f"k must be in [0, {n}], got {k}")


def _as_similarity(similarity: torch.Tensor, k: int) -> tuple[torch.Tensor, int, int, torch.dtype]:
    """A checked, contiguous CPU copy of a dense similarity (float64 kept, else float32), its shape and dtype."""
    sim = similarity.detach().cpu()
    if sim.dim() != 2:
        raise ValueError("similarity must be a matrix")
    m, n = sim.shape
    _check_k(k, m)
    dtype = sim.dtype if sim.dtype == torch.float64 else torch.float32
    return sim.to(dtype).contiguous(), m, n, dtype


def facility_location_greedy_plain(similarity: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference plain greedy on a dense similarity (row j = how well j represents each point): the oracle.

    Recomputes every candidate's gain at every step (O(k n^2)); ties go to the lowest index. Returns
    (indices, cluster sizes) exactly like `facility_location`.
    """
    sim, m, n, dtype = _as_similarity(similarity, k)
    state = _Assignment(n, dtype)
    taken = torch.zeros(m, dtype=torch.bool)
    with _loop_threads():
        for _ in range(k):
            gains = torch.cat([_gains(sim[s : s + 256], state.cur) for s in range(0, m, 256)])
            gains[taken] = -1.0
            j = int(torch.argmax(gains))  # first maximum = lowest index
            taken[j] = True
            state.add(j, sim[j])
    return state.result(dtype)


def facility_location_value(similarity: torch.Tensor, indices: torch.Tensor) -> float:
    """Facility-location objective F(A) = sum_i max_{j in A} S_ji (0 for the empty set), in float64."""
    idx = torch.as_tensor(indices, dtype=torch.int64).reshape(-1)
    if idx.numel() == 0:
        return 0.0
    # numpy: a tiny torch reduction can stall for milliseconds on a busy machine's thread barrier
    return float(similarity[idx].detach().cpu().to(torch.float64).numpy().max(axis=0).sum())


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
    with _loop_threads():
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

    Same picks and weights as `facility_location_greedy_plain`, at a fraction of the gain evaluations;
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
    dense_bytes: int = _DENSE_BYTES,
    max_batch: int = 128,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CRAIG: pick k medoid rows maximising F = sum_i max_{j in A} (max(D) - D_ji) by lazy greedy.

    Returns (indices int64 in pick order, weights = cluster sizes, summing to n; a chosen row always
    counts in its own cluster, other ties go to the earlier pick). The picks are exactly the plain
    greedy picks (lowest index wins ties) - see `_lazy_greedy`.

    Memory: when n^2 * itemsize <= dense_bytes (1 GiB: n <= 16,384 in float32) the similarity is built
    once, in `chunk`-row blocks (float32 unless the features are float64). Otherwise nothing n x n is
    kept: a length-n "current best" vector plus `chunk` x n blocks; similarity rows are recomputed from
    the features on demand, after one extra pass that finds the exact max(D). Recomputed rows match to
    the last bit in practice (float64 distances for d <= 64); for larger d an ulp of GEMM rounding could
    in principle reorder a near-tie. Both paths also keep one centred copy of the features
    (float64 for d <= 64), so budget n * d * itemsize on top of the caller's tensor.
    """
    pts = _Points(features)
    n = pts.n
    _check_k(k, n)
    dtype = pts.dtype
    if k == 0:
        return torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=dtype)
    chunk = _default_chunk(n, chunk)
    itemsize = torch.empty(0, dtype=dtype).element_size()
    if n * n * itemsize <= dense_bytes:
        sim = _dense_similarity(pts, chunk)
        del pts  # the centred copy is not needed once S exists
        return facility_location_lazy(sim, k, max_batch=max_batch)

    big_m = pts.max_dist(chunk)

    def rows_of(idx: list[int]) -> torch.Tensor:
        return pts.sq_dists(torch.tensor(idx, dtype=torch.int64)).neg_().add_(big_m)

    def row_of(j: int) -> torch.Tensor:
        return rows_of([j])[0]

    return _lazy_greedy(n, k, rows_of, row_of, dtype, chunk, max_batch)


# --------------------------------------------------------------------------------------------------------
# GradMatch: OMP with a true NNLS refit
# --------------------------------------------------------------------------------------------------------
def _solve_upper_t(r: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Solve R^T Z = rhs for a small upper-triangular R (rhs a vector or a matrix)."""
    return scipy.linalg.solve_triangular(r, rhs, trans="T", lower=False, check_finite=False)


class _GrowingCholesky:
    """Upper factor R (R^T R = H_FF + lam I) of the atoms in the factor, grown a block of columns at a time, float64.

    R lives in a C-ordered cap x cap buffer whose unused trailing part is the identity: its transpose is a
    Fortran-ordered lower factor that BLAS dtrsv takes without a copy (the padding just returns zeros).
    cap grows in steps of 256, so the padding costs little, inside one allocation sized for max_cols: the
    rows move apart in place, so growing neither copies into fresh memory nor page-faults again (fresh
    buffers cost 0.2 s of a 1 s GradMatch class). Columns are never deleted (`_OmpState` pins atoms to zero
    instead); appending m columns costs one BLAS-3 solve plus an m x m Cholesky.
    """

    _STEP = 256

    def __init__(self, max_cols: int) -> None:
        cap = self._STEP * max(1, math.ceil(max_cols / self._STEP))
        self.memory = np.empty(cap * cap)
        self.buf = self._grown(0, self._STEP)
        self.p = 0

    def _grown(self, old: int, cap: int) -> np.ndarray:
        """The buffer grown from old to cap: rows 0..old-1 move to the wider stride (last first, so no row is
        overwritten before it moves); the new rows and columns are the identity."""
        new = self.memory[: cap * cap].reshape(cap, cap)
        for i in range(old - 1, -1, -1):
            new[i, :old] = self.memory[i * old : (i + 1) * old]
        new[:old, old:] = 0.0
        new[old:] = 0.0
        new[np.arange(old, cap), np.arange(old, cap)] = 1.0
        return new

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        """Solve R z = rhs."""
        if self.p == 0:
            return np.zeros(0)
        padded = np.zeros(self.buf.shape[0])
        padded[: self.p] = rhs
        return _blas.dtrsv(self.buf.T, padded, lower=1, trans=1, overwrite_x=1)[: self.p]

    def solve_units_t(self, qs: list[int]) -> np.ndarray:
        """R^{-T} [e_q for q in qs], (p x len(qs)) in one BLAS-3 solve. Column j is zero above qs[j], so when
        every q lies in the trailing half only that block is read (copied out: f2py needs it contiguous)."""
        p, q0, cols = self.p, min(qs), np.arange(len(qs))
        if 2 * (p - q0) < p:
            rhs = np.zeros((p - q0, len(qs)), order="F")
            rhs[np.asarray(qs) - q0, cols] = 1.0
            out = np.zeros((p, len(qs)))
            out[q0:] = _blas.dtrsm(1.0, np.asfortranarray(self.buf[q0:p, q0:p].T), rhs, lower=1, trans_a=0, overwrite_b=1)
            return out
        rhs = np.zeros((self.buf.shape[0], len(qs)), order="F")
        rhs[qs, cols] = 1.0
        return _blas.dtrsm(1.0, self.buf.T, rhs, lower=1, trans_a=0, overwrite_b=1)[:p]

    def append_block(self, h_cols: np.ndarray, h_new: np.ndarray, rel_tol: float) -> list[int]:
        """Add m columns: Gram entries h_cols (p x m) against the factor and h_new (m x m, ridge on its diagonal).

        One BLAS-3 solve R^T Y = h_cols reads the factor once for all m columns; the Schur complement
        h_new - Y^T Y is then factored by LAPACK. A column numerically dependent on those before it
        (rho^2 <= rel_tol * its diagonal) is skipped, by a column-at-a-time factorisation in that case.
        Returns the indices t of the columns added, in order.
        """
        p0, m = self.p, h_new.shape[0]
        if p0 + m > self.buf.shape[0]:
            self.buf = self._grown(self.buf.shape[0], self._STEP * math.ceil((p0 + m) / self._STEP))
        if p0:
            rhs = np.zeros((self.buf.shape[0], m), order="F")
            rhs[:p0] = h_cols
            y = _blas.dtrsm(1.0, self.buf.T, rhs, lower=1, trans_a=0, overwrite_b=1)[:p0]
        else:
            y = np.zeros((0, m))
        schur = h_new - y.T @ y
        try:
            u = scipy.linalg.cholesky(schur, lower=False, check_finite=False)
            ok = bool(np.all(np.diag(u) ** 2 > rel_tol * np.diag(h_new)))
        except np.linalg.LinAlgError:
            ok = False
        if ok:
            self.buf[:p0, p0 : p0 + m] = y
            self.buf[p0 : p0 + m, p0 : p0 + m] = u
            self.p = p0 + m
            return list(range(m))
        added: list[int] = []
        for t in range(m):
            p = self.p
            z = _solve_upper_t(self.buf[p0:p, p0:p], schur[added, t]) if added else np.zeros(0)
            rho2 = schur[t, t] - float(z @ z)
            if not rho2 > rel_tol * h_new[t, t]:
                continue
            self.buf[:p0, p] = y[:, t]
            self.buf[p0:p, p] = z
            self.buf[p, p] = math.sqrt(rho2)
            self.p = p + 1
            added.append(t)
        return added


class _OmpState:
    """Support S (pick order), its Gram H_SS (float64), f_S = A_S b and the NNLS solution x_S >= 0.

    The Lawson-Hanson passive set P lives in a Cholesky factor R of H_FF + lam I over a set F of atoms that
    contains P: an atom leaving P stays in F, pinned to zero. With D = F minus P and V = R^{-T} E_D, the least
    squares solution on P is z = R^{-1} (y + V mu) with y = R^{-T} f_F and (V^T V) mu = -V^T y (the KKT system
    of the problem over F with z_D = 0). So leaving P costs one triangular solve on the trailing block and
    re-entering costs nothing, where deleting a column from R would take O(p) Givens rotations, one Python
    step each. When more than _MAX_PINNED atoms are pinned, the factor is rebuilt over P (one LAPACK Cholesky).
    """

    _MAX_PINNED = 256

    def __init__(self, lam: float, dep_tol: float, max_atoms: int) -> None:
        self.lam = lam
        self.dep_tol = dep_tol
        self.max_atoms = max_atoms
        self.s = 0
        # sized for all k atoms at once: zero pages cost nothing until written, and nothing is ever copied
        self.h = np.zeros((max_atoms, max_atoms), dtype=np.float64)
        self.f = np.zeros(max_atoms, dtype=np.float64)
        self.x = np.zeros(max_atoms, dtype=np.float64)
        self.in_p = np.zeros(max_atoms, dtype=bool)  # position is in the passive set
        self.blocked = np.zeros(max_atoms, dtype=bool)  # could not enter P (dependent); cleared when P shrinks
        self._reset_factor()

    def _reset_factor(self) -> None:
        """An empty factor: F = D = {}."""
        self.chol = _GrowingCholesky(self.max_atoms)
        self.cols: list[int] = []  # positions of the factor's columns, in order
        self.y = np.zeros(0)  # R^{-T} f_F
        self.pinned: list[int] = []  # factor columns in D, in the column order of V
        self.v = np.zeros((0, 0))  # R^{-T} E_D
        self.m = np.zeros((0, 0))  # V^T V

    def add_atoms(self, cross: np.ndarray, f_new: np.ndarray) -> list[int]:
        """Append m atoms with Gram rows cross (m x (s + m): against the support, then each other) and f values
        f_new; returns their positions."""
        t, m = self.s, len(f_new)
        self.h[t : t + m, : t + m] = cross
        self.h[: t + m, t : t + m] = cross.T
        self.f[t : t + m] = f_new
        self.x[t : t + m] = 0.0
        self.s = t + m
        return list(range(t, t + m))

    def _append(self, positions: list[int]) -> list[int]:
        """Add positions to the factor (one block update of R, y and V); returns those added, in order."""
        p0 = self.chol.p
        h_new = self.h[np.ix_(positions, positions)]
        h_new[np.diag_indices_from(h_new)] += self.lam
        added = [positions[t] for t in self.chol.append_block(self.h[np.ix_(self.cols, positions)], h_new, self.dep_tol)]
        if added:
            r = self.chol.buf
            y_acc, u = r[:p0, p0 : self.chol.p], r[p0 : self.chol.p, p0 : self.chol.p]
            self.y = np.concatenate([self.y, _solve_upper_t(u, self.f[added] - y_acc.T @ self.y)])
            v_new = _solve_upper_t(u, -(y_acc.T @ self.v))
            self.v = np.vstack([self.v, v_new.reshape(len(added), len(self.pinned))])
            self.m += v_new.T @ v_new
            self.cols += added
        return added

    def _pin(self, positions: list[int]) -> None:
        """Take positions out of P while keeping them in the factor: add their columns of R^{-T} to V (one solve)."""
        qs = [self.cols.index(pos) for pos in positions]
        w = self.chol.solve_units_t(qs)
        cross = self.v.T @ w
        self.m = np.block([[self.m, cross], [cross.T, w.T @ w]])
        self.v = np.hstack([self.v, w])
        self.pinned += qs

    def _unpin(self, pos: int) -> None:
        """Return a pinned atom to P: drop its column of V."""
        j = self.pinned.index(self.cols.index(pos))
        self.pinned.pop(j)
        self.v = np.delete(self.v, j, axis=1)
        self.m = np.delete(np.delete(self.m, j, axis=0), j, axis=1)

    def _rebuild(self) -> None:
        """Refactor over P alone (D = {}); an atom found dependent on the rest leaves P."""
        passive = [pos for pos in self.cols if self.in_p[pos]]
        self._reset_factor()
        kept = set(self._append(passive)) if passive else set()
        for pos in passive:
            if pos not in kept:
                self.in_p[pos] = False
                self.x[pos] = 0.0

    def _enter(self, positions: list[int]) -> list[int]:
        """Move positions into P; returns those that entered, in order. Atoms numerically dependent on the
        passive set are blocked (after a rebuild, if pinned atoms were in the way)."""
        in_factor = set(self.cols)
        for pos in positions:
            if pos in in_factor:
                self._unpin(pos)
                self.in_p[pos] = True
        new = [pos for pos in positions if pos not in in_factor]
        added = self._append(new) if new else []
        failed = [pos for pos in new if pos not in set(added)]
        if failed and self.pinned:  # dependent on F, perhaps not on P: drop the pinned atoms and retry
            self.in_p[added] = True
            self._rebuild()
            added += self._append(failed)
        self.in_p[added] = True
        self.blocked[[pos for pos in positions if not self.in_p[pos]]] = True
        return [pos for pos in positions if self.in_p[pos]]

    def _remove(self, positions: list[int]) -> None:
        """Take positions out of P (pinned to zero in the factor); rebuild when too many are pinned."""
        if positions:
            self._pin(positions)
            self.x[positions] = 0.0
            self.in_p[positions] = False
        self.blocked[: self.s] = False
        if len(self.pinned) > self._MAX_PINNED:
            self._rebuild()

    def _solve(self) -> tuple[np.ndarray, np.ndarray]:
        """(positions of P in factor order, the least-squares solution on P)."""
        rhs = self.y
        if self.pinned:
            rhs = rhs + self.v @ np.linalg.solve(self.m, -(self.v.T @ self.y))
        z = self.chol.solve(rhs)
        cols = np.asarray(self.cols, dtype=np.int64)
        act = self.in_p[cols]
        return cols[act], z[act]

    def nnls(self, new_positions: list[int]) -> None:
        """Block principal pivoting (Kim & Park 2011), warm-started from the previous passive set plus new_positions.

        Solves min_{x >= 0} ||A_S^T x - b||^2 + lam ||x||^2 in Gram form (H_SS + lam I, f_S): a true NNLS over
        the whole support S. Each round solves least squares on P, then swaps every infeasible atom at once:
        x_i < 0 in P leaves, dual w_i = f_i - H_iP x_P > 0 outside P enters (so atoms dropped earlier come
        back). If the number of infeasible atoms stops falling for 3 rounds, only the highest-positioned one
        swaps (Murty's rule, finite) until it falls again. The answer is the KKT point, so with lam > 0 (unique
        minimiser) it equals the Lawson-Hanson one; the block swaps just need far fewer factor solves.
        """
        s = self.s
        wtol = 1e-11 * max(float(np.abs(self.f[:s]).max()), 1e-300)
        self._enter(list(new_positions))
        fewest, budget = s + 1, 3
        x = np.zeros(s)
        for _ in range(10 * s + 50):  # guard against cycling in floating point
            ps, z = self._solve()
            x[:] = 0.0
            x[ps] = z
            zs = np.nonzero(~(self.in_p[:s] | self.blocked[:s]))[0]
            w = self.f[zs] - self.h[zs, :s] @ x
            leave, join = ps[z < 0.0], zs[w > wtol]
            bad = leave.size + join.size
            if bad == 0:
                break
            if bad < fewest:
                fewest, budget = bad, 3
            elif budget > 0:
                budget -= 1
            else:
                last = max(leave.max(initial=-1), join.max(initial=-1))
                leave, join = leave[leave == last], join[join == last]
            self._remove(leave.tolist())
            self._enter(join.tolist())
        self.x[:s] = np.maximum(x, 0.0)

    def residual_sq(self, bnorm2: float) -> float:
        """||b - A_S^T x||^2 from the Gram identity at the LS optimum on P (no length-d vectors needed)."""
        x = self.x[: self.s]
        return max(0.0, bnorm2 - float(self.f[: self.s] @ x) - self.lam * float(x @ x))


def omp_nnls(
    atoms: torch.Tensor | Rows,
    target: torch.Tensor,
    k: int,
    lam: float = 0.0,
    tol: float = 1e-6,
    *,
    gram: bool | None = None,
    gram_bytes: int = _DENSE_BYTES,
    step_atoms: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GradMatch: OMP toward `target` (the summed gradient) over atom rows, refit by ridge NNLS each step.

    Each step picks the not-yet-chosen atom with the largest positive inner product with the residual
    (ties: lowest index; with step_atoms = m > 1 the m largest positive ones, generalised OMP, which needs
    k/m refits instead of k), then re-solves min_{x >= 0} ||A_S^T x - target||^2 + lam ||x||^2 exactly over the
    whole support S: block principal pivoting on an incrementally grown float64 Cholesky factor, never a
    solve from scratch. Atoms NNLS set to 0 stay in S (OMP does not pick them again) and re-enter the
    solution whenever their dual turns positive. Stops at k atoms, when no atom correlates positively, or
    when ||residual|| <= tol ||target||.

    `atoms` is an (n, d) tensor with target (d,), or `FactoredGradients` with target a (C, D + 1) matrix of
    its row space (e.g. `atoms.combine(ones)`), whose inner products cost C + D + 1 instead of C (D + 1).

    Returns (indices int64 in pick order, weights >= 0 in the compute dtype). Zero weights are kept (atoms
    NNLS dropped, or numerically dependent ones: rho^2 <= 1e-5 of their norm^2 in float32, 1e-12 in
    float64); `fill_random` drops them and completes the budget.

    Residual correlations: with gram=None the n x n Gram matrix is precomputed (float32 unless float64
    input) when it fits in gram_bytes and is estimated cheaper, and then c = A b - G_S^T x and ||r||^2 comes
    from the Gram identity (in float32 that resolves ||r|| only down to roughly 1e-3 ||target||, ample for
    gradients); otherwise r = b - A_S^T x and c = A r explicitly. Memory beyond the inputs: the Gram matrix
    if used, k rows of it (or k atoms), and O(k^2) float64 for the support Gram and the factor (about 50 MB
    each at k = 2,500).
    """
    rows = as_rows(atoms)
    n = len(rows)
    if tuple(target.shape) != rows.vector_shape:
        raise ValueError(f"target must have shape {rows.vector_shape}, got {tuple(target.shape)}")
    _check_k(k, n)
    if lam < 0:
        raise ValueError(f"lam must be >= 0, got {lam}")
    if step_atoms < 1:
        raise ValueError(f"step_atoms must be >= 1, got {step_atoms}")
    if not (rows.all_finite() and DenseRows(target.reshape(1, -1)).all_finite()):
        raise ValueError("atoms or target contain NaN or inf")
    dtype = _compute_dtype(rows.fields[0])
    rows = rows.to(dtype)
    b = target.detach().to(device="cpu", dtype=dtype)
    b64 = target.detach().to(device="cpu", dtype=torch.float64)
    bnorm2 = float((b64 * b64).sum())
    empty = torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=dtype)
    if k == 0 or bnorm2 == 0.0:
        return empty

    alpha0 = rows.correlate64(b64).numpy()  # A b: correlations with the residual at x = 0, and f_S
    if gram is None:
        # in multiplications, over k/m steps at mean support k/2: the Gram path pays n^2 inner products once,
        # then reads n x s per step (a GEMV, ~16x a GEMM multiplication here); the direct path correlates all
        # n atoms per step (dense rows: a GEMV over n x d; factored rows: skinny GEMMs over the n atoms and the
        # support, measured at ~4x a GEMM multiplication) plus the new atoms' inner products (k^2 / 2 in all)
        steps = k / step_atoms
        if isinstance(rows, DenseRows):
            per_step = 16 * n * rows.inner_cost
        else:
            per_step = 4 * (n + k / 2) * math.prod(rows.vector_shape)
        gram = (n * n * rows.fields[0].element_size() <= gram_bytes
                and n * n * rows.inner_cost + 16 * steps * n * k / 2 < steps * per_step + k * k * rows.inner_cost / 2)
    support = DenseRows(rows.gram(rows)) if gram else rows  # what the kept rows of the support are: G rows or atoms
    kept = support.empty(k)
    dep_tol = 1e-12 if dtype == torch.float64 else 1e-5
    st = _OmpState(lam, dep_tol, k)
    picked = torch.empty(k, dtype=torch.int64)
    chosen = torch.zeros(n, dtype=torch.bool)
    alpha0_t = torch.from_numpy(alpha0)
    tol2 = tol * tol * bnorm2

    with _loop_threads():
        while st.s < k:
            s = st.s
            xs = torch.from_numpy(st.x[:s].copy()).to(dtype)
            if s == 0:
                corr = alpha0_t.clone()
                r2 = bnorm2
            elif gram:
                corr = alpha0_t - kept[:s].combine(xs).to(torch.float64)
                r2 = st.residual_sq(bnorm2)
            else:
                resid = b - kept[:s].combine(xs)
                corr = rows.correlate(resid).to(torch.float64)
                r2 = float((resid.to(torch.float64) ** 2).sum())
            if r2 <= tol2:
                break
            corr[chosen] = -math.inf
            take = min(step_atoms, k - s)
            if take == 1:
                js = torch.argmax(corr).reshape(1)
            else:
                vals, js = torch.topk(corr, take)
                js = js[vals > 0.0]
            if js.numel() == 0 or not float(corr[js[0]]) > 0.0:
                break
            m = js.numel()
            chosen[js] = True
            picked[s : s + m] = js
            kept.put(s, support[js])
            # inner products of the new atoms with the support and each other (one GEMM, not m GEMVs)
            cross = kept[s : s + m].a[:, picked[: s + m]] if gram else kept[s : s + m].gram(kept[: s + m])
            st.nnls(st.add_atoms(cross.to(torch.float64).numpy(), alpha0[js.numpy()]))

    w = torch.from_numpy(np.maximum(st.x[: st.s], 0.0).copy()).to(dtype)
    return picked[: st.s].clone(), w


# --------------------------------------------------------------------------------------------------------
# Glue
# --------------------------------------------------------------------------------------------------------
def fill_random(
    indices: torch.Tensor,
    weights: torch.Tensor,
    n: int,
    k: int,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Complete a solver's pick to exactly k distinct rows: keep positive weights, fill at weight 1.

    GradMatch convention: zero-weight picks carry nothing and are dropped (they may be drawn again as
    fill); the shortfall is drawn uniformly without replacement from rows not kept (from `generator`,
    else torch's global RNG). Kept rows come first, in their given order.
    """
    _check_k(k, n)
    idx = torch.as_tensor(indices, dtype=torch.int64).reshape(-1).cpu()
    w = torch.as_tensor(weights).reshape(-1).cpu()
    if idx.shape != w.shape:
        raise ValueError("indices and weights must have the same length")
    wdtype = w.dtype if w.is_floating_point() else torch.float32
    keep = w > 0
    idx, w = idx[keep], w[keep].to(wdtype)
    if idx.numel() and (idx.min() < 0 or idx.max() >= n):
        raise ValueError(f"indices must lie in [0, {n})")
    if torch.unique(idx).numel() != idx.numel():
        raise ValueError("indices with positive weight must be distinct")
    if idx.numel() > k:
        raise ValueError(f"{idx.numel()} rows already have positive weight, more than k={k}")
    short = k - idx.numel()
    if short == 0:
        return idx, w
    free = torch.ones(n, dtype=torch.bool)
    free[idx] = False
    pool = torch.nonzero(free).reshape(-1)
    extra = pool[torch.randperm(pool.numel(), generator=generator)[:short]]
    return torch.cat([idx, extra]), torch.cat([w, torch.ones(short, dtype=wdtype)])


def class_budgets(y: torch.Tensor, fraction: float, total: int) -> dict[int, int]:
    """Per-class coreset budgets ceil(fraction * n_c), capped at n_c, then adjusted to sum to exactly total.

    Over budget: take one away, repeatedly, from the class with the largest budget (ties: smallest class
    id). Under budget (only when total exceeds the sum of ceilings): add one, repeatedly, to the class
    with the most room n_c - budget (ties: smallest class id). Budgets stay within [0, n_c].
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    labels, counts = torch.unique(torch.as_tensor(y).reshape(-1), return_counts=True)
    sizes = {int(c): int(m) for c, m in zip(labels.tolist(), counts.tolist())}
    n = sum(sizes.values())
    if not 0 <= total <= n:
        raise ValueError(f"total must be in [0, {n}], got {total}")
    budget = {c: min(m, math.ceil(fraction * m - 1e-9)) for c, m in sizes.items()}
    excess = sum(budget.values()) - total
    while excess > 0:
        c = min(budget, key=lambda c: (-budget[c], c))
        budget[c] -= 1
        excess -= 1
    while excess < 0:
        c = min(budget, key=lambda c: (-(sizes[c] - budget[c]), c))
        budget[c] += 1
        excess += 1
    return budget


def matching_error(grads: torch.Tensor | Rows, indices: torch.Tensor, weights: torch.Tensor) -> float:
    """Relative gradient-matching error ||sum_i g_i - sum_j w_j g_j|| / ||sum_i g_i|| (the ACS objective).

    Computed in float64 (dense rows in row blocks); 0.0 when both norms vanish, inf when only the full sum does.
    """
    rows = as_rows(grads)
    idx = torch.as_tensor(indices, dtype=torch.int64).reshape(-1).cpu()
    w = torch.as_tensor(weights, dtype=torch.float64).reshape(-1).cpu()
    if idx.shape != w.shape:
        raise ValueError("indices and weights must have the same length")
    step = max(1, _BLOCK_ELEMS // max(math.prod(rows.vector_shape), 1))

    def weighted_sum(sel: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return sum((rows[sel[s : s + step]].to(torch.float64).combine(x[s : s + step]) for s in range(0, len(sel), step)),
                   torch.zeros(rows.vector_shape, dtype=torch.float64))

    full = weighted_sum(torch.arange(len(rows)), torch.ones(len(rows), dtype=torch.float64))
    num = float(torch.linalg.vector_norm(full - weighted_sum(idx, w)))
    den = float(torch.linalg.vector_norm(full))
    if den == 0.0:
        return 0.0 if num == 0.0 else math.inf
    return num / den
