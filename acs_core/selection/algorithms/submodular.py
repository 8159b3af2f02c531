"""Greedy maximisation of the zoo's submodular set functions on a dense symmetric kernel K (n x n):

    graph cut        f(S) = sum_{i in V, j in S} K_ij - lam * sum_{i, j in S} K_ij
    log determinant  f(S) = log det(K_SS + lam I)
    (facility location: facility_location.facility_location_lazy, f(S) = sum_i max_{j in S} K_ij)

Each greedy step adds the candidate with the largest marginal gain, ties to the lowest index, with O(n) (graph cut)
or O(n |S|) (log determinant, incremental Cholesky as in Chen et al.'s fast greedy MAP) work per step.
"""
from __future__ import annotations

import torch


def graph_cut_greedy(kernel: torch.Tensor, k: int, lam: float) -> torch.Tensor:
    """Greedy graph cut: gain(e | S) = sum_i K_ie - lam * (2 sum_{j in S} K_je + K_ee)."""
    kern = kernel.double()
    base = kern.sum(0) - lam * kern.diagonal()
    inner = torch.zeros_like(base)
    taken = torch.zeros(len(base), dtype=torch.bool, device=kern.device)
    picks = []
    for _ in range(k):
        j = int(torch.argmax((base - 2 * lam * inner).masked_fill(taken, -float("inf"))))
        picks.append(j)
        taken[j] = True
        inner += kern[j]
    return torch.tensor(picks)


def log_det_greedy(kernel: torch.Tensor, k: int, lam: float) -> torch.Tensor:
    """Greedy log det(K_SS + lam I): gain(e | S) = log d_e^2, the Schur complement of e, kept by Cholesky updates."""
    kern = kernel.double()
    n = len(kern)
    d2 = kern.diagonal() + lam
    chol = torch.zeros(n, k, dtype=kern.dtype, device=kern.device)
    taken = torch.zeros(n, dtype=torch.bool, device=kern.device)
    picks = []
    for t in range(k):
        j = int(torch.argmax(d2.clamp(min=1e-300).log().masked_fill(taken, -float("inf"))))
        picks.append(j)
        taken[j] = True
        row = kern[j].clone()
        row[j] += lam
        e = (row - chol[:, :t] @ chol[j, :t]) / d2[j].clamp(min=1e-300).sqrt()
        chol[:, t] = e
        d2 = d2 - e * e
    return torch.tensor(picks)
