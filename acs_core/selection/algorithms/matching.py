"""How well a weighted subset matches the full gradient sum: the ACS objective, reported with every selection."""
from __future__ import annotations

import math

import torch

from ..rows import Rows, as_rows
from .numerics import BLOCK_ELEMS


def matching_error(grads: torch.Tensor | Rows, indices: torch.Tensor, weights: torch.Tensor) -> float:
    """Relative gradient-matching error ||sum_i g_i - sum_j w_j g_j|| / ||sum_i g_i|| (the ACS objective).

    Computed in float64 (dense rows in row blocks); 0.0 when both norms vanish, inf when only the full sum does.
    """
    rows = as_rows(grads)
    idx = torch.as_tensor(indices, dtype=torch.int64).reshape(-1).cpu()
    w = torch.as_tensor(weights, dtype=torch.float64).reshape(-1).cpu()
    if idx.shape != w.shape:
        raise ValueError("indices and weights must have the same length")
    step = max(1, BLOCK_ELEMS // max(math.prod(rows.vector_shape), 1))

    def weighted_sum(sel: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return sum((rows[sel[s : s + step]].to(torch.float64).combine(x[s : s + step]) for s in range(0, len(sel), step)),
                   torch.zeros(rows.vector_shape, dtype=torch.float64))

    full = weighted_sum(torch.arange(len(rows)), torch.ones(len(rows), dtype=torch.float64))
    num = float(torch.linalg.vector_norm(full - weighted_sum(idx, w)))
    den = float(torch.linalg.vector_norm(full))
    if den == 0.0:
        return 0.0 if num == 0.0 else math.inf
    return num / den
