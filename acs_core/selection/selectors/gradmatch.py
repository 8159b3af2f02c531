"""`gradmatch`: (Adv.) GradMatch - OMP with non-negative ridge least squares toward the summed gradient."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..algorithms.omp import fill_random, omp_nnls
from ..base import SELECTORS, option
from ..rows import FactoredGradients, as_rows
from .families import GradientMatching


@SELECTORS.register("gradmatch", "Adv. GradMatch (ACS): OMP + NNLS matching the summed adversarial gradient; view=clean for GradMatch")
@dataclass
class GradMatch(GradientMatching):
    lam: float = option(0.5, minimum=0.0)  # ridge lambda of the coefficient fit (the reference's default)
    step_atoms: int = option(1, minimum=1)  # atoms added per OMP step: 1 = OMP as in the paper; m > 1 = generalised OMP, ~m x fewer refits

    def solve(self, grads: torch.Tensor | FactoredGradients, k: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        idx, w = omp_nnls(grads, as_rows(grads).total(), k, lam=self.lam, step_atoms=self.step_atoms)
        return fill_random(idx, w, len(grads), k, generator)
