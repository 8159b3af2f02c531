"""`gradmatch`: (adversarial) GradMatch - OMP with non-negative ridge least squares toward the summed gradient."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import ConfigError
from .base import SELECTORS
from .gradient_matching import GradientMatchingSelector
from .rows import FactoredGradients, as_rows
from .solvers import fill_random, omp_nnls


@SELECTORS.register("gradmatch", "Adv. GradMatch (ACS): OMP + NNLS matching the summed adversarial gradient; view=clean for GradMatch")
@dataclass
class GradMatch(GradientMatchingSelector):
    lam: float = 0.5  # ridge lambda of the coefficient fit (the reference's default)
    step_atoms: int = 1  # atoms added per OMP step: 1 = OMP as in the paper; m > 1 = generalised OMP, ~m x fewer refits

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lam < 0:
            raise ConfigError(f"selector.lam: {self.lam} is negative; use lam=0 (plain NNLS) or more")
        if self.step_atoms < 1:
            raise ConfigError(f"selector.step_atoms: {self.step_atoms} < 1; use 1 (OMP) or more")

    def solve(self, grads: torch.Tensor | FactoredGradients, k: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        idx, w = omp_nnls(grads, as_rows(grads).total(), k, lam=self.lam, step_atoms=self.step_atoms)
        return fill_random(idx, w, len(grads), k, generator)
