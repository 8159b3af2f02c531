"""The budget policy, the one place that turns a coreset fraction into row counts: the selection's budget (coreset_size)
and its split over groups of candidates (per class, or one global group)."""
from __future__ import annotations

import math

import torch

from ..data import sample_per_class


def coreset_size(fraction: float, n: int) -> int:
    """The budget of a selection among `n` candidate rows: round(fraction * n), at least one row."""
    return max(1, round(fraction * n))


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


def random_subset(y: torch.Tensor, fraction: float, budget: int, class_balanced: bool,
                  generator: torch.Generator) -> torch.Tensor:
    """The `random` selector's draw, sorted rows: per class within class_budgets (class_balanced), else uniformly
    `budget` of all; also the random set the matching-error diagnostic compares a selection with."""
    if class_balanced:
        return sample_per_class(y, class_budgets(y, fraction, budget), generator)  # sorted
    return torch.sort(torch.randperm(len(y), generator=generator)[:budget]).values


def groups(y: torch.Tensor, fraction: float, budget: int, class_balanced: bool) -> list[tuple[torch.Tensor, int]]:
    """(candidate rows, budget) per class (class_budgets; classes with budget 0 are left out) or one global group."""
    y = y.cpu()
    if not class_balanced:
        return [(torch.arange(len(y)), budget)]
    return [(torch.nonzero(y == c).flatten(), k) for c, k in class_budgets(y, fraction, budget).items() if k > 0]
