"""Reference oracles the tests compare the solvers with: set-function values and the plain greedy that re-evaluates
every gain at every step. Slow and simple on purpose; never used by acs_core."""
from __future__ import annotations

import torch

from acs_core.selection.algorithms.facility_location import _as_similarity, _Assignment, _gains
from acs_core.selection.algorithms.numerics import loop_threads


def facility_location_greedy_plain(similarity: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain greedy on a dense similarity (row j = how well j represents each point), with the solver's own gain
    sums: recomputes every candidate's gain at every step (O(k n^2)); ties go to the lowest index. Returns
    (indices, cluster sizes) exactly like `facility_location`."""
    sim, m, n, dtype = _as_similarity(similarity, k)
    state = _Assignment(n, dtype)
    taken = torch.zeros(m, dtype=torch.bool)
    with loop_threads():
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
    return float(similarity[idx].detach().cpu().to(torch.float64).numpy().max(axis=0).sum())


def graph_cut_value(kernel: torch.Tensor, picks: torch.Tensor, lam: float) -> float:
    """f(S) = sum_{i in V, j in S} K_ij - lam * sum_{i, j in S} K_ij."""
    k = kernel.double()
    return float(k[:, picks].sum() - lam * k[picks][:, picks].sum())


def log_det_value(kernel: torch.Tensor, picks: torch.Tensor, lam: float) -> float:
    """f(S) = log det(K_SS + lam I) (0 for the empty set)."""
    sub = kernel.double()[picks][:, picks]
    return float(torch.linalg.slogdet(sub + lam * torch.eye(len(picks), dtype=sub.dtype, device=sub.device)).logabsdet)
