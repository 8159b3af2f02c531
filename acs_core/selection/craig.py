"""`craig`: (adversarial) CRAIG - facility-location medoids of the selection gradients, weighted by cluster size."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import SELECTORS
from .gradient_matching import GradientMatchingSelector
from .rows import FactoredGradients, as_dense
from .solvers import facility_location


@SELECTORS.register("craig", "Adv. CRAIG (ACS): facility location on adversarial last-layer gradients; view=clean for CRAIG")
@dataclass
class Craig(GradientMatchingSelector):
    gradient: str = "bias"  # the reference ACS code clusters the C-dim bias gradient; gradient=full uses C+C*D

    def solve(self, grads: torch.Tensor | FactoredGradients, k: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return facility_location(as_dense(grads), k)
