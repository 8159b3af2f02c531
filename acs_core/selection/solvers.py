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
of j is sum_i max(0, min_{s in A} D_si - D_ji), in which M cancels. A shift M' < max(D) would make some
S_ij negative and change the first pick (the clamp at the empty set starts biting), so it is not allowed.
"""
from __future__ import annotations

import heapq
import math

import numpy as np
import torch
from scipy.linalg import blas as _blas

__all__ = [
    "class_budgets",
    "craig_similarity",
    "facility_location",
    "facility_location_greedy_plain",
    "facility_location_value",
    "fill_random",
    "matching_error",
    "omp_nnls",
]

# Up to this many feature dimensions, squared distances are summed coordinate by coordinate: exact
# (no ||a||^2 + ||b||^2 - 2ab cancellation) and bitwise independent of how rows are batched.
_EXACT_DIST_MAX_DIMS = 16
# Fixed column chunk for gain sums, so a candidate's gain never depends on how candidates are batched.
_GAIN_CHUNK = 8192
# Default budget for CRAIG's dense similarity (and OMP's Gram matrix) before falling back to recomputation.
_DENSE_BYTES = 1 << 30
# Row-block size (elements) for chunked distance / matrix-vector work.
_BLOCK_ELEMS = 1 << 24


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
    """Rows prepared for squared-distance blocks: centred (matmul path) or raw (exact small-d path)."""

    def __init__(self, features: torch.Tensor) -> None:
        if features.dim() != 2:
            raise ValueError(f"features must be (n, d), got shape {tuple(features.shape)}")
        x = features.detach().to(device="cpu", dtype=_compute_dtype(features))
        self.exact = x.shape[1] <= _EXACT_DIST_MAX_DIMS
        if self.exact:
            self.x = x.contiguous()
            self.sq = None
        else:
            # centring leaves distances unchanged and shrinks the cancellation error of the norm trick
            self.x = (x - x.mean(dim=0, keepdim=True)).contiguous()
            self.sq = (self.x * self.x).sum(dim=1)
        self.n = x.shape[0]

    def sq_dists(self, rows: torch.Tensor) -> torch.Tensor:
        """Squared distances D[rows, :] (len(rows), n), clamped at 0, with D[j, j] = 0 exactly."""
        xa = self.x[rows]
        if self.exact:
            out = torch.zeros(len(rows), self.n, dtype=self.x.dtype)
            for t in range(self.x.shape[1]):
                diff = xa[:, t, None] - self.x[None, :, t]
                out.addcmul_(diff, diff)
        else:
            out = xa @ self.x.T
            out.mul_(-2.0).add_(self.sq[rows, None]).add_(self.sq[None, :]).clamp_(min=0.0)
            out[torch.arange(len(rows)), rows] = 0.0
        return out

    def max_dist(self, chunk: int) -> float:
        """Exact max(D) over all pairs, computed in row blocks."""
        m = 0.0
        for s in range(0, self.n, chunk):
            rows = torch.arange(s, min(s + chunk, self.n))
            m = max(m, float(self.sq_dists(rows).max()))
        return m


def craig_similarity(features: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    """Dense CRAIG similarity S = max(D) - D (n, n) built in row blocks; for tests and small n."""
    pts = _Points(features)
    n = pts.n
    chunk = _default_chunk(n, chunk)
    sim = torch.empty(n, n, dtype=pts.x.dtype)
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


def facility_location_greedy_plain(similarity: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference plain greedy on a dense similarity (row j = how well j represents each point): the oracle.

    Recomputes every candidate's gain at every step (O(k n^2)); ties go to the lowest index. Returns
    (indices, cluster sizes) exactly like `facility_location`.
    """
    sim = similarity.detach().cpu()
    if sim.dim() != 2:
        raise ValueError("similarity must be a matrix")
    m, n = sim.shape
    _check_k(k, m)
    state = _Assignment(n, sim.dtype)
    taken = torch.zeros(m, dtype=torch.bool)
    for _ in range(k):
        gains = torch.cat([_gains(sim[s : s + 256], state.cur) for s in range(0, m, 256)])
        gains[taken] = -1.0
        j = int(torch.argmax(gains))  # first maximum = lowest index
        taken[j] = True
        state.add(j, sim[j])
    return state.result(sim.dtype if sim.dtype == torch.float64 else torch.float32)


def facility_location_value(similarity: torch.Tensor, indices: torch.Tensor) -> float:
    """Facility-location objective F(A) = sum_i max_{j in A} S_ji (0 for the empty set), in float64."""
    idx = torch.as_tensor(indices, dtype=torch.int64).reshape(-1)
    if idx.numel() == 0:
        return 0.0
    return float(similarity[idx].to(torch.float64).max(dim=0).values.sum())


def facility_location(
    features: torch.Tensor,
    k: int,
    chunk: int | None = None,
    *,
    dense_bytes: int = _DENSE_BYTES,
    max_batch: int = 128,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CRAIG: pick k medoid rows maximising F = sum_i max_{j in A} (max(D) - D_ji) by lazy greedy.

    Returns (indices int64 in pick order, weights = cluster sizes). Exactly the plain greedy solution:
    stale gains sit in a heap keyed (-bound, index); the top is taken only once its gain is fresh, which
    by submodularity (bounds only fall) makes it the lowest-index argmax of the true gains. Stale tops are
    re-evaluated in batches (1, 2, 4, ... up to `max_batch` per round) to amortise tensor-call overhead.

    Memory: when n^2 * itemsize <= dense_bytes the similarity is built once, densely, in `chunk`-row blocks
    (float32 unless the features are float64); otherwise only a length-n "current best" vector is kept and
    similarity rows are recomputed from the features on demand (one extra pass finds the exact max(D)).
    For d <= 16 distances are exact coordinate sums; for larger d the recomputed path uses the matmul norm
    trick, whose rounding may differ by an ulp between batches, so there exact agreement with plain greedy
    holds up to such rounding in near-ties.
    """
    pts = _Points(features)
    n = pts.n
    _check_k(k, n)
    out_dtype = pts.x.dtype
    if k == 0:
        return torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=out_dtype)
    chunk = _default_chunk(n, chunk)
    itemsize = pts.x.element_size()

    if n * n * itemsize <= dense_bytes:
        sim = craig_similarity(features, chunk)

        def rows_of(idx: list[int]) -> torch.Tensor:
            return sim[torch.tensor(idx, dtype=torch.int64)]

    else:
        big_m = pts.max_dist(chunk)

        def rows_of(idx: list[int]) -> torch.Tensor:
            return pts.sq_dists(torch.tensor(idx, dtype=torch.int64)).neg_().add_(big_m)

    state = _Assignment(n, out_dtype)
    heap: list[tuple[float, int, int]] = []
    for s in range(0, n, chunk):
        ids = list(range(s, min(s + chunk, n)))
        g = _gains(rows_of(ids), state.cur).tolist()
        heap.extend((-gj, j, 0) for gj, j in zip(g, ids))
    heapq.heapify(heap)

    for step in range(k):
        size = 1
        while heap[0][2] != step:  # top is stale: refresh it and the next stale bounds
            ids = []
            while heap and len(ids) < size and heap[0][2] != step:
                ids.append(heapq.heappop(heap)[1])
            g = _gains(rows_of(ids), state.cur).tolist()
            for gj, j in zip(g, ids):
                heapq.heappush(heap, (-gj, j, step))
            size = min(2 * size, max_batch)
        _, j, _ = heapq.heappop(heap)
        state.add(j, rows_of([j])[0])
    return state.result(out_dtype)


# --------------------------------------------------------------------------------------------------------
# GradMatch: OMP with a true NNLS refit
# --------------------------------------------------------------------------------------------------------
def _matvec64(a: torch.Tensor, v: torch.Tensor) -> np.ndarray:
    """a @ v in float64, converting a in row blocks so a float32 `a` is never copied whole to float64."""
    n, d = a.shape
    v64 = v.to(torch.float64)
    step = max(1, _BLOCK_ELEMS // max(d, 1))
    out = np.empty(n, dtype=np.float64)
    for s in range(0, n, step):
        out[s : s + step] = (a[s : s + step].to(torch.float64) @ v64).numpy()
    return out


class _PackedCholesky:
    """Upper Cholesky factor R (R^T R = H_PP + lam I) in packed column-major storage, grown column by column.

    Packing keeps the leading p x p factor a contiguous prefix, so BLAS dtpsv solves it without a copy;
    appending is O(p^2), deleting a column is a Givens sweep over the trailing block.
    """

    def __init__(self) -> None:
        self.buf = np.zeros(64, dtype=np.float64)
        self.p = 0

    def _col(self, j: int) -> slice:
        """Slice of the packed buffer holding column j (rows 0..j)."""
        off = j * (j + 1) // 2
        return slice(off, off + j + 1)

    def solve_t(self, rhs: np.ndarray) -> np.ndarray:
        """Solve R^T y = rhs."""
        if self.p == 0:
            return np.zeros(0)
        return _blas.dtpsv(self.p, self.buf, np.array(rhs, dtype=np.float64), lower=0, trans=1)

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        """Solve R z = rhs."""
        if self.p == 0:
            return np.zeros(0)
        return _blas.dtpsv(self.p, self.buf, np.array(rhs, dtype=np.float64), lower=0, trans=0)

    def append(self, h_col: np.ndarray, h_diag: float, rel_tol: float) -> np.ndarray | None:
        """Add a column with off-diagonal Gram entries h_col and diagonal h_diag (ridge included).

        Returns r = R^{-T} h_col (used to update y = R^{-T} f), or None when the new atom is numerically
        dependent on the passive set (rho^2 <= rel_tol * h_diag) and was not added.
        """
        r = self.solve_t(h_col)
        rho2 = h_diag - float(r @ r)
        if not rho2 > rel_tol * h_diag:
            return None
        need = (self.p + 1) * (self.p + 2) // 2
        if need > self.buf.size:
            grown = np.zeros(max(need, 2 * self.buf.size), dtype=np.float64)
            grown[: self.buf.size] = self.buf
            self.buf = grown
        col = self._col(self.p)
        self.buf[col.start : col.stop - 1] = r
        self.buf[col.stop - 1] = math.sqrt(rho2)
        self.p += 1
        return r

    def delete(self, q: int) -> None:
        """Remove column q (and the matching row of the Gram): Givens rotations restore triangularity."""
        p = self.p
        m = p - 1 - q  # number of trailing columns that move left
        if m > 0:
            old = [self.buf[self._col(j)].copy() for j in range(q + 1, p)]
            # trailing rows q..p-1 of the moved columns form an (m+1) x m upper-Hessenberg block
            t = np.zeros((m + 1, m), dtype=np.float64)
            for c, colv in enumerate(old):
                t[: c + 2, c] = colv[q:]
            for i in range(m):
                a, b = t[i, i], t[i + 1, i]
                rr = math.hypot(a, b)
                if rr == 0.0:
                    continue
                cs, sn = a / rr, b / rr
                ri = t[i, i:].copy()
                t[i, i:] = cs * ri + sn * t[i + 1, i:]
                t[i + 1, i:] = -sn * ri + cs * t[i + 1, i:]
                t[i + 1, i] = 0.0
            for c, colv in enumerate(old):
                dst = self._col(q + c)
                self.buf[dst.start : dst.start + q] = colv[:q]
                self.buf[dst.start + q : dst.stop] = t[: c + 1, c]
        self.p = p - 1


class _OmpState:
    """Support S (pick order), its Gram H_SS (float64), targets f_S = A_S b and the NNLS solution x_S."""

    def __init__(self, lam: float, dep_tol: float) -> None:
        self.lam = lam
        self.dep_tol = dep_tol
        self.idx: list[int] = []
        self.h = np.zeros((16, 16), dtype=np.float64)
        self.f = np.zeros(16, dtype=np.float64)
        self.x = np.zeros(16, dtype=np.float64)
        self.passive: list[int] = []  # positions into idx, in the column order of the Cholesky factor
        self.chol = _PackedCholesky()
        self.y = np.zeros(0)  # R^{-T} f_P
        self.dependent: set[int] = set()  # positions that could not enter P (cleared when P shrinks)
        self.deletions = 0

    @property
    def s(self) -> int:
        """Support size."""
        return len(self.idx)

    def add_atom(self, j: int, h_row: np.ndarray, f_j: float) -> int:
        """Append atom j with Gram row h_row (against the support including itself); returns its position."""
        t = self.s
        if t + 1 > self.f.size:
            cap = 2 * self.f.size
            h = np.zeros((cap, cap), dtype=np.float64)
            h[:t, :t] = self.h[:t, :t]
            self.h = h
            self.f = np.concatenate([self.f, np.zeros(cap - self.f.size)])
            self.x = np.concatenate([self.x, np.zeros(cap - self.x.size)])
        self.h[t, : t + 1] = h_row
        self.h[: t + 1, t] = h_row
        self.f[t] = f_j
        self.x[t] = 0.0
        self.idx.append(j)
        return t

    def _enter(self, pos: int) -> bool:
        """Move position pos into the passive set (Cholesky append, y update); False if dependent."""
        pas = self.passive
        r = self.chol.append(self.h[pas, pos], self.h[pos, pos] + self.lam, self.dep_tol)
        if r is None:
            self.dependent.add(pos)
            return False
        rho = self.chol.buf[self.chol._col(self.chol.p - 1)][-1]
        self.y = np.append(self.y, (self.f[pos] - float(r @ self.y)) / rho)
        pas.append(pos)
        return True

    def _remove(self, qs: list[int]) -> None:
        """Drop passive columns qs (indices into self.passive), highest first, and refresh y."""
        for q in sorted(qs, reverse=True):
            self.chol.delete(q)
            pos = self.passive.pop(q)
            self.x[pos] = 0.0
            self.deletions += 1
        self.dependent.clear()
        self.y = self.chol.solve_t(self.f[self.passive])

    def nnls(self, new_pos: int) -> None:
        """Lawson-Hanson active set, warm-started from the previous solution with new_pos entering.

        Solves min_{x >= 0} ||A_S^T x - b||^2 + lam ||x||^2 in Gram form (H_SS + lam I, f_S): a true NNLS
        over the whole support, so atoms dropped earlier re-enter when their dual w_i = f_i - H_iP x_P > 0.
        """
        s = self.s
        scale = max(float(np.abs(self.f[:s]).max()), 1e-300)
        wtol = 1e-11 * scale
        cand: int | None = new_pos
        for _ in range(3 * s + 20):
            if cand is None:
                in_p = set(self.passive)
                zs = [i for i in range(s) if i not in in_p and i not in self.dependent]
                if not zs:
                    break
                xp = self.x[self.passive]
                w = self.f[zs] - self.h[np.ix_(zs, self.passive)] @ xp if self.passive else self.f[zs].copy()
                best = int(np.argmax(w))
                if not w[best] > wtol:
                    break
                cand = zs[best]
            entered = cand
            cand = None
            if not self._enter(entered):
                continue
            while True:
                z = self.chol.solve(self.y)
                if z.size == 0 or z.min() > 0.0:
                    self.x[self.passive] = z
                    break
                xp = self.x[self.passive]
                bad = np.nonzero(z <= 0.0)[0]
                if len(self.passive) - 1 in bad and xp[-1] == 0.0 and self.passive[-1] == entered:
                    # the entering atom cannot move off zero (rounding): take it back out and stop trying it
                    self._remove([len(self.passive) - 1])
                    self.dependent.add(entered)
                    self.x[self.passive] = self.chol.solve(self.y)
                    break
                ratios = xp[bad] / (xp[bad] - z[bad])
                alpha = float(ratios.min())
                xp = xp + alpha * (z - xp)
                hit = set(bad[ratios <= alpha].tolist())
                drop = [q for q in range(len(xp)) if q in hit or xp[q] <= 0.0]
                self.x[self.passive] = np.maximum(xp, 0.0)
                self._remove(drop)
                if not self.passive:
                    break

    def residual_sq(self, bnorm2: float) -> float:
        """||b - A_S^T x||^2 from the Gram identity at the LS optimum on P (no big vectors needed)."""
        pas = self.passive
        if not pas:
            return bnorm2
        xp = self.x[pas]
        return max(0.0, bnorm2 - float(self.f[pas] @ xp) - self.lam * float(xp @ xp))


def omp_nnls(
    atoms: torch.Tensor,
    target: torch.Tensor,
    k: int,
    lam: float = 0.0,
    tol: float = 1e-6,
    *,
    gram: bool | None = None,
    gram_bytes: int = _DENSE_BYTES,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GradMatch: OMP toward `target` (the summed gradient) over atom rows, refit by ridge NNLS each step.

    Each step picks the not-yet-chosen atom with the largest positive inner product with the residual,
    then re-solves min_{x >= 0} ||A_S^T x - target||^2 + lam ||x||^2 exactly (warm-started Lawson-Hanson on
    an incrementally updated float64 Cholesky factor: O(s^2) per step, never a solve from scratch).
    Stops at k atoms, when no atom correlates positively, or when ||residual|| <= tol ||target||.

    Returns (indices int64 in pick order, weights >= 0). Atoms that NNLS pushed to 0 (or that were
    numerically dependent) stay in the list with weight 0; `fill_random` completes the budget.

    Residual correlations cost O(n min(s, d)) a step: with gram=None the n x n Gram matrix A A^T is
    precomputed (float32 unless float64 input) when it fits in gram_bytes and is estimated cheaper, and then
    c = A b - G_S^T x; otherwise c = A (b - A_S^T x). Memory beyond the inputs: O(k^2) float64 for the
    support Gram and factor (50 MB each at k = 2,500), plus the Gram matrix if used.
    """
    if atoms.dim() != 2:
        raise ValueError(f"atoms must be (n, d), got shape {tuple(atoms.shape)}")
    n, d = atoms.shape
    if target.shape != (d,):
        raise ValueError(f"target must have shape ({d},), got {tuple(target.shape)}")
    _check_k(k, n)
    if lam < 0:
        raise ValueError(f"lam must be >= 0, got {lam}")
    dtype = _compute_dtype(atoms)
    a = atoms.detach().to(device="cpu", dtype=dtype).contiguous()
    b = target.detach().to(device="cpu", dtype=dtype)
    b64 = target.detach().to(device="cpu", dtype=torch.float64)
    bnorm2 = float(b64 @ b64)
    empty = torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=dtype)
    if k == 0 or bnorm2 == 0.0:
        return empty

    alpha0 = _matvec64(a, b64)  # A b: correlations with the residual at x = 0, and f_S
    itemsize = a.element_size()
    if gram is None:
        # G costs n^2 d at GEMM speed (~16x a GEMV per flop here); then each step reads s x n instead of n x d
        gram = n * n * itemsize <= gram_bytes and (n / 16.0 + k * k / (2.0 * d)) < k
    g_full = a @ a.T if gram else None
    dep_tol = 1e-12 if dtype == torch.float64 else 1e-5
    st = _OmpState(lam, dep_tol)
    rows_buf = torch.empty(min(k, 64), n if gram else d, dtype=dtype)  # G rows or atoms of the support
    chosen = torch.zeros(n, dtype=torch.bool)
    alpha0_t = torch.from_numpy(alpha0)
    tol2 = tol * tol * bnorm2

    while st.s < k:
        s = st.s
        xs = torch.from_numpy(st.x[:s].copy()).to(dtype)
        if s == 0:
            corr = alpha0_t.clone()
            r2 = bnorm2
        elif gram:
            corr = alpha0_t - (rows_buf[:s].T @ xs).to(torch.float64)
            r2 = st.residual_sq(bnorm2)
        else:
            resid = b - rows_buf[:s].T @ xs
            corr = (a @ resid).to(torch.float64)
            r2 = float((resid.to(torch.float64) ** 2).sum())
        if r2 <= tol2:
            break
        corr[chosen] = -math.inf
        j = int(torch.argmax(corr))
        if not float(corr[j]) > 0.0:
            break
        chosen[j] = True
        if s + 1 > rows_buf.shape[0]:
            grown = torch.empty(min(k, 2 * rows_buf.shape[0]), rows_buf.shape[1], dtype=dtype)
            grown[:s] = rows_buf[:s]
            rows_buf = grown
        if gram:
            rows_buf[s] = g_full[j]
            h_row = g_full[j, torch.tensor(st.idx + [j])].to(torch.float64).numpy()
        else:
            rows_buf[s] = a[j]
            h_row = (rows_buf[: s + 1] @ a[j]).to(torch.float64).numpy()
        pos = st.add_atom(j, h_row, float(alpha0[j]))
        st.nnls(pos)

    idx = torch.tensor(st.idx, dtype=torch.int64)
    w = torch.from_numpy(np.maximum(st.x[: st.s], 0.0).copy()).to(dtype)
    return idx, w


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
    """Complete a solver's pick to exactly k distinct rows: keep positive weights, add random rows at weight 1.

    GradMatch convention: zero-weight picks carry nothing and are dropped (they may be drawn again as
    fill); the shortfall is drawn uniformly without replacement from rows not kept. Kept rows come first.
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


def matching_error(grads: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor) -> float:
    """Relative gradient-matching error ||sum_i g_i - sum_j w_j g_j|| / ||sum_i g_i|| (the ACS objective).

    Computed in float64 in row blocks; 0.0 when both norms vanish, inf when only the full sum does.
    """
    g = grads.detach().cpu()
    n, d = g.shape
    idx = torch.as_tensor(indices, dtype=torch.int64).reshape(-1).cpu()
    w = torch.as_tensor(weights, dtype=torch.float64).reshape(-1).cpu()
    if idx.shape != w.shape:
        raise ValueError("indices and weights must have the same length")
    step = max(1, _BLOCK_ELEMS // max(d, 1))
    full = torch.zeros(d, dtype=torch.float64)
    for s in range(0, n, step):
        full += g[s : s + step].to(torch.float64).sum(dim=0)
    part = torch.zeros(d, dtype=torch.float64)
    for s in range(0, idx.numel(), step):
        part += g[idx[s : s + step]].to(torch.float64).T @ w[s : s + step]
    num = float(torch.linalg.vector_norm(full - part))
    den = float(torch.linalg.vector_norm(full))
    if den == 0.0:
        return 0.0 if num == 0.0 else math.inf
    return num / den
