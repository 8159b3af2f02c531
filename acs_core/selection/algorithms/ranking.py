"""Picks by rank of a per-candidate score: the top (or bottom) k with seeded tie-breaking, or the band of k around
the median."""
from __future__ import annotations

import torch


def top_k(scores: torch.Tensor, k: int, largest: bool, generator: torch.Generator) -> torch.Tensor:
    """Positions of the k largest (or smallest) scores; equal scores are ordered by a random permutation."""
    if torch.isnan(scores).any():
        raise ValueError("scores contain NaN")
    order = torch.randperm(len(scores), generator=generator)
    ranked = torch.sort(scores.cpu()[order], descending=largest, stable=True).indices[:k]
    return order[ranked]


def median_band(distances: torch.Tensor, k: int) -> torch.Tensor:
    """Positions of the k values centred on the median rank (stable order; an odd surplus drops one more far value)."""
    order = torch.sort(distances, stable=True).indices
    start = (len(distances) - k) // 2
    return order[start:start + k]
