"""Tests of the greedy coreset solvers (CRAIG facility location, GradMatch OMP-NNLS) and their glue."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.optimize
import torch

from acs_core.selection.algorithms import omp
from acs_core.selection.algorithms.facility_location import craig_similarity, facility_location, facility_location_lazy
from acs_core.selection.algorithms.matching import matching_error
from acs_core.selection.algorithms.omp import fill_random, omp_nnls
from acs_core.selection.budgets import class_budgets
from oracles import facility_location_greedy_plain, facility_location_value


def _gen(seed: int) -> torch.Generator:
    """A seeded CPU generator, so every test is deterministic."""
    return torch.Generator().manual_seed(seed)


def _clustered(n: int, d: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Rows drawn around a few centres: realistic, tie-free, and with clearly better and worse medoids."""
    g = _gen(seed)
    centres = 3.0 * torch.randn(5, d, generator=g, dtype=dtype)
    which = torch.randint(0, 5, (n,), generator=g)
    return centres[which] + torch.randn(n, d, generator=g, dtype=dtype)


# ------------------------------------------------------------------------------------------------ CRAIG
@pytest.mark.parametrize(
    "n,d,k,dtype,seed",
    [
        (120, 8, 15, torch.float64, 0),
        (200, 40, 30, torch.float32, 1),
        (150, 100, 150, torch.float64, 2),  # k = n: the tail of zero gains, ties broken by index
        (90, 3, 20, torch.float32, 3),
    ],
)
def test_lazy_greedy_equals_plain_greedy(n: int, d: int, k: int, dtype: torch.dtype, seed: int) -> None:
    x = _clustered(n, d, seed, dtype)
    plain_idx, plain_w = facility_location_greedy_plain(craig_similarity(x), k)
    idx, w = facility_location(x, k)
    assert torch.equal(idx, plain_idx)  # same rows, same order
    assert torch.equal(w, plain_w)


def test_lazy_greedy_equals_plain_greedy_with_exact_ties() -> None:
    g = _gen(4)
    # integer similarities with duplicated candidates and duplicated points: many exact ties
    base = torch.randint(0, 6, (40, 40), generator=g).to(torch.float32)
    sim = torch.cat([base, base[:10]], dim=0)
    sim = torch.cat([sim, sim[:, :10]], dim=1)
    for k in (1, 5, 17, 50):
        assert torch.equal(facility_location_lazy(sim, k)[0], facility_location_greedy_plain(sim, k)[0])
        assert torch.equal(facility_location_lazy(sim, k)[1], facility_location_greedy_plain(sim, k)[1])
    # duplicated feature rows (integer-valued, so distances are exact): ties between the copies
    x = torch.randint(-3, 4, (60, 4), generator=g).to(torch.float32)
    x = torch.cat([x, x[:20]], dim=0)
    plain_idx, plain_w = facility_location_greedy_plain(craig_similarity(x), 30)
    idx, w = facility_location(x, 30)
    assert torch.equal(idx, plain_idx) and torch.equal(w, plain_w)


def test_recomputed_rows_path_matches_dense_path() -> None:
    x = _clustered(130, 12, 5, torch.float64)
    dense = facility_location(x, 25)
    streamed = facility_location(x, 25, chunk=17, dense_bytes=0)  # no n x n matrix at all
    assert torch.equal(dense[0], streamed[0]) and torch.equal(dense[1], streamed[1])


def test_greedy_value_within_1_minus_1_over_e_of_brute_force() -> None:
    bound = 1.0 - 1.0 / math.e
    for seed in range(12):
        g = _gen(100 + seed)
        n = int(torch.randint(4, 10, (1,), generator=g))
        x = torch.randn(n, 3, generator=g, dtype=torch.float64)
        sim = craig_similarity(x)
        for k in range(1, min(3, n) + 1):
            subsets = itertools.combinations(range(n), k)
            best = max(facility_location_value(sim, torch.tensor(c)) for c in subsets)
            got = facility_location_value(sim, facility_location(x, k)[0])
            assert got >= bound * best - 1e-9
            assert got <= best + 1e-9


def test_permuting_rows_permutes_the_selection() -> None:
    x = _clustered(180, 16, 6, torch.float64)
    perm = torch.randperm(180, generator=_gen(7))
    idx, w = facility_location(x, 20)
    idx_p, w_p = facility_location(x[perm], 20)
    mapped = perm[idx_p]  # back to original row ids
    assert set(mapped.tolist()) == set(idx.tolist())
    assert dict(zip(mapped.tolist(), w_p.tolist())) == dict(zip(idx.tolist(), w.tolist()))


def test_weights_are_cluster_sizes() -> None:
    x = _clustered(160, 10, 8, torch.float32)
    k = 12
    idx, w = facility_location(x, k)
    assert idx.dtype == torch.int64 and len(set(idx.tolist())) == k
    assert float(w.sum()) == 160.0
    assert bool((w >= 1).all())
    d = torch.cdist(x.double(), x[idx].double())  # points x chosen medoids
    owner = d.argmin(dim=1)
    owner[idx] = torch.arange(k)
    assert torch.equal(torch.bincount(owner, minlength=k).to(w.dtype), w)


def test_facility_location_edge_cases() -> None:
    x = _clustered(10, 3, 9)
    idx, w = facility_location(x, 0)
    assert idx.numel() == 0 and w.numel() == 0
    idx, w = facility_location(x, 10)
    assert sorted(idx.tolist()) == list(range(10)) and bool((w == 1).all())
    with pytest.raises(ValueError):
        facility_location(x, 11)
    assert facility_location_value(craig_similarity(x), torch.tensor([], dtype=torch.int64)) == 0.0


# ------------------------------------------------------------------------------------------------ GradMatch
def _nnls_on_support(atoms: torch.Tensor, target: torch.Tensor, idx: torch.Tensor, lam: float) -> np.ndarray:
    """Reference ridge-NNLS coefficients on a fixed support (scipy, augmented system)."""
    a = atoms[idx].double().numpy().T
    b = target.double().numpy()
    if lam > 0:
        a = np.vstack([a, math.sqrt(lam) * np.eye(len(idx))])
        b = np.concatenate([b, np.zeros(len(idx))])
    return scipy.optimize.nnls(a, b, maxiter=50 * len(idx) + 100)[0]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_omp_recovers_planted_nonnegative_combination(dtype: torch.dtype) -> None:
    atoms = torch.randn(200, 50, generator=_gen(10), dtype=dtype)
    planted = {17: 2.0, 88: 0.7, 151: 1.3}
    target = sum(c * atoms[i] for i, c in planted.items())
    idx, w = omp_nnls(atoms, target, 10)
    assert set(idx.tolist()) == set(planted)  # stops once the residual vanishes
    got = dict(zip(idx.tolist(), w.tolist()))
    for i, c in planted.items():
        assert got[i] == pytest.approx(c, rel=1e-4)
    fit = (atoms[idx].double().T @ w.double() - target.double()).norm() / target.double().norm()
    assert float(fit) < (1e-10 if dtype == torch.float64 else 1e-5)


@pytest.mark.parametrize("max_pinned", [256, 0])
@pytest.mark.parametrize("lam,gram,step", [(0.0, False, 1), (0.0, True, 1), (0.5, False, 1), (0.5, True, 1),
                                            (0.0, True, 7), (0.5, False, 16)])
def test_omp_weights_are_a_true_nnls_solution(lam: float, gram: bool, step: int, max_pinned: int,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """With one atom per step (OMP) or several (generalised OMP, block entry), weights solve NNLS exactly; also
    when the factor is rebuilt after every pin (max_pinned 0) instead of carrying pinned atoms."""
    monkeypatch.setattr(omp._OmpState, "_MAX_PINNED", max_pinned)
    g = _gen(11)
    n, d = 300, 40
    f64 = torch.float64
    atoms = 0.3 * torch.randn(n, d, generator=g, dtype=f64) + torch.randn(1, d, generator=g, dtype=f64)
    atoms[:100] = -0.5 * atoms[:100] + torch.randn(100, d, generator=g, dtype=f64)
    target = atoms.sum(dim=0)
    idx, w = omp_nnls(atoms, target, 60, lam=lam, gram=gram, step_atoms=step)
    assert bool((w >= 0).all())
    assert len(set(idx.tolist())) == len(idx)
    ref = _nnls_on_support(atoms, target, idx, lam)

    def objective(x: np.ndarray) -> float:
        return float(np.sum((atoms[idx].numpy().T @ x - target.numpy()) ** 2) + lam * np.sum(x**2))

    assert objective(w.numpy()) <= objective(ref) + 1e-9 * float(target.norm()) ** 2
    if lam > 0:  # strictly convex: the minimiser itself is unique
        assert np.abs(w.numpy() - ref).max() <= 1e-8 * max(1.0, np.abs(ref).max())
    # the constraint is active: plain least squares on this support goes negative
    ls = np.linalg.lstsq(atoms[idx].numpy().T, target.numpy(), rcond=None)[0]
    assert (ls < 0).any() or (w == 0).any()


def test_generalised_omp_recovers_planted_combination() -> None:
    atoms = torch.randn(300, 80, generator=_gen(15), dtype=torch.float64)
    planted = {3: 1.5, 40: 0.4, 77: 2.2, 150: 1.0, 299: 0.8}
    target = sum(c * atoms[i] for i, c in planted.items())
    idx, w = omp_nnls(atoms, target, 40, step_atoms=8)
    got = {i: c for i, c in zip(idx.tolist(), w.tolist()) if c > 1e-9}
    assert set(got) == set(planted)
    assert all(got[i] == pytest.approx(c, rel=1e-6) for i, c in planted.items())
    with pytest.raises(ValueError, match="step_atoms"):
        omp_nnls(atoms, target, 4, step_atoms=0)


def test_omp_gram_and_direct_paths_agree() -> None:
    atoms = torch.randn(150, 400, generator=_gen(12), dtype=torch.float64)
    target = atoms.sum(dim=0)
    a = omp_nnls(atoms, target, 40, gram=True)
    b = omp_nnls(atoms, target, 40, gram=False)
    assert torch.equal(a[0], b[0])
    assert torch.allclose(a[1], b[1], rtol=1e-8, atol=1e-10)


def test_ridge_shrinks_coefficients() -> None:
    atoms = torch.randn(200, 50, generator=_gen(13), dtype=torch.float64)
    target = 2.0 * atoms[5] + 1.0 * atoms[60] + 3.0 * atoms[120]
    idx0, w0 = omp_nnls(atoms, target, 3)
    idx1, w1 = omp_nnls(atoms, target, 3, lam=20.0)
    assert set(idx0.tolist()) == set(idx1.tolist()) == {5, 60, 120}
    assert float(w1.norm()) < float(w0.norm())
    assert np.allclose(w1.numpy(), _nnls_on_support(atoms, target, idx1, 20.0), atol=1e-9)


def test_omp_stopping_rules() -> None:
    atoms = torch.randn(50, 20, generator=_gen(14), dtype=torch.float64).abs()
    # every atom anti-correlated with the target: nothing to pick
    idx, w = omp_nnls(atoms, -atoms.sum(dim=0), 10)
    assert idx.numel() == 0 and w.numel() == 0
    # zero target and k = 0
    assert omp_nnls(atoms, torch.zeros(20, dtype=torch.float64), 5)[0].numel() == 0
    assert omp_nnls(atoms, atoms.sum(dim=0), 0)[0].numel() == 0
    # never more than k atoms
    assert omp_nnls(atoms, atoms.sum(dim=0), 4)[0].numel() == 4
    with pytest.raises(ValueError):
        omp_nnls(atoms, atoms.sum(dim=0), 51)


# ------------------------------------------------------------------------------------------------ glue
def test_fill_random_gives_exactly_k_distinct_rows() -> None:
    idx = torch.tensor([4, 9, 2, 7])
    w = torch.tensor([1.5, 0.0, 2.0, 0.25])
    out_idx, out_w = fill_random(idx, w, n=30, k=10, generator=_gen(15))
    assert out_idx.numel() == 10 and len(set(out_idx.tolist())) == 10
    assert out_idx[:3].tolist() == [4, 2, 7] and out_w[:3].tolist() == [1.5, 2.0, 0.25]  # zero weight dropped
    assert bool((out_w[3:] == 1.0).all())
    assert bool(((out_idx >= 0) & (out_idx < 30)).all())
    again = fill_random(idx, w, n=30, k=10, generator=_gen(15))
    assert torch.equal(again[0], out_idx)  # seeded
    full = fill_random(torch.tensor([], dtype=torch.int64), torch.tensor([]), n=8, k=8, generator=_gen(1))
    assert sorted(full[0].tolist()) == list(range(8))
    with pytest.raises(ValueError):
        fill_random(idx, torch.ones(4), n=30, k=3)


def test_class_budgets_exact_total_and_shares() -> None:
    y = torch.tensor([0] * 10 + [1] * 7 + [2] * 3)
    # ceil(0.5 * n_c) = 5, 4, 2 (sum 11); one trimmed from the largest budget (class 0)
    assert class_budgets(y, 0.5, 10) == {0: 4, 1: 4, 2: 2}
    assert class_budgets(y, 0.5, 11) == {0: 5, 1: 4, 2: 2}
    # ties on the largest budget: the smallest class id gives first
    assert class_budgets(torch.tensor([0] * 4 + [1] * 4), 0.5, 3) == {0: 1, 1: 2}
    assert class_budgets(y, 1.0, 20) == {0: 10, 1: 7, 2: 3}
    assert class_budgets(y, 0.0, 0) == {0: 0, 1: 0, 2: 0}
    g = _gen(16)
    for _ in range(20):
        yy = torch.randint(0, 7, (int(torch.randint(10, 200, (1,), generator=g)),), generator=g)
        frac = float(torch.rand(1, generator=g))
        total = round(frac * yy.numel())
        b = class_budgets(yy, frac, total)
        counts = torch.bincount(yy)
        assert sum(b.values()) == total
        assert all(0 <= b[c] <= int(counts[c]) for c in b)
        assert all(b[c] <= math.ceil(frac * int(counts[c]) - 1e-9) for c in b)
    with pytest.raises(ValueError):
        class_budgets(y, 0.5, 21)


def test_matching_error() -> None:
    grads = torch.randn(400, 30, generator=_gen(17), dtype=torch.float64) + 0.5
    n = grads.shape[0]
    assert matching_error(grads, torch.arange(n), torch.ones(n)) == pytest.approx(0.0, abs=1e-12)
    idx, w = omp_nnls(grads, grads.sum(dim=0), 60)
    good = matching_error(grads, idx, w)
    rand_idx = torch.randperm(n, generator=_gen(18))[:60]
    rand = matching_error(grads, rand_idx, torch.full((60,), n / 60.0, dtype=torch.float64))
    assert good < 1e-6 < rand  # 30 dims: OMP matches exactly, a scaled random subset does not
    assert matching_error(grads, torch.tensor([], dtype=torch.int64), torch.tensor([])) == pytest.approx(1.0)
