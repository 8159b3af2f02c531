"""`gradmatch`: (adversarial) GradMatch - OMP with non-negative ridge least squares toward the summed gradient."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import SELECTORS
from .gradient_matching import GradientMatchingSelector
from .solvers import fill_random, omp_nnls


@SELECTORS.register("gradmatch", "Adv. GradMatch (ACS): OMP + NNLS matching the summed adversarial gradient; view=clean for GradMatch")
@dataclass
class GradMatch(GradientMatchingSelector):
    lam: float = 0.5  # ridge lambda of the coefficient fit (the reference's default)

    def solve(self, grads: torch.Tensor, k: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        idx, w = omp_nnls(grads, grads.sum(0), k, lam=self.lam)
        return fill_random(idx, w, len(grads), k, generator)
