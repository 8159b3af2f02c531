"""k-center greedy (Sener & Savarese; Contextual Diversity with a divergence): cover all points with k centres."""
from __future__ import annotations

from typing import Callable

import torch


def kcenter_greedy(distance_to: Callable[[int], torch.Tensor], n: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """k picks: a random first centre, then each time argmax_i min_c d(i, c) (ties to the lower index)."""
    first = int(torch.randint(n, (1,), generator=generator))
    picks = [first]
    nearest = distance_to(first).clone().float()
    taken = torch.zeros(n, dtype=torch.bool, device=nearest.device)
    taken[first] = True
    for _ in range(k - 1):
        j = int(torch.argmax(nearest.masked_fill(taken, -1.0)))
        picks.append(j)
        taken[j] = True
        nearest = torch.minimum(nearest, distance_to(j).float())
    return torch.tensor(picks)
