"""Herding (Welling; the iCaRL exemplar rule): each step adds the point that brings the chosen mean closest to the
mean of all points."""
from __future__ import annotations

import torch


def herding(points: torch.Tensor, k: int) -> torch.Tensor:
    """k picks, each argmin_i ||mean(points) - (sum of picks + points_i) / (t + 1)|| (ties to the lower index)."""
    pts = points.double()
    mu, total = pts.mean(0), torch.zeros(pts.shape[1], dtype=pts.dtype, device=pts.device)
    taken = torch.zeros(len(pts), dtype=torch.bool, device=pts.device)
    picks = []
    for t in range(k):
        gap = (mu - (total + pts) / (t + 1)).norm(dim=1).masked_fill(taken, float("inf"))
        j = int(torch.argmin(gap))
        picks.append(j)
        taken[j] = True
        total += pts[j]
    return torch.tensor(picks)
