"""GradMatch's solver: orthogonal matching pursuit toward the summed gradient with a true non-negative (optionally
ridge) least-squares refit after every pick, and `fill_random`, which completes its pick to exactly k rows.

Atoms are plain (n, d) rows or factored last-layer gradients (`rows.FactoredGradients`), whose inner products cost
C + D + 1 instead of C (D + 1): the refit works on their Gram entries, never on materialised rows.
"""
from __future__ import annotations

import math

import numpy as np
import scipy.linalg
import torch
from scipy.linalg import blas as _blas

from ..rows import DenseRows, Rows, as_rows
from .numerics import DENSE_BYTES, check_k, compute_dtype, loop_threads


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
    gram_bytes: int = DENSE_BYTES,
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
    check_k(k, n)
    if lam < 0:
        raise ValueError(f"lam must be >= 0, got {lam}")
    if step_atoms < 1:
        raise ValueError(f"step_atoms must be >= 1, got {step_atoms}")
    if not (rows.all_finite() and DenseRows(target.reshape(1, -1)).all_finite()):
        raise ValueError("atoms or target contain NaN or inf")
    dtype = compute_dtype(rows.fields[0])
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

    with loop_threads():
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
    check_k(k, n)
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
