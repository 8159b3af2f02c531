"""`craig`: (Adv.) CRAIG - facility-location medoids of the view's last-layer gradients, weighted by cluster size."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..algorithms.facility_location import facility_location
from ..base import SELECTORS, option
from ..rows import FactoredGradients, as_dense
from .families import GRADIENTS, GradientMatching


@SELECTORS.register("craig", "Adv. CRAIG (ACS): facility location on adversarial last-layer gradients; view=clean for CRAIG")
@dataclass
class Craig(GradientMatching):
    gradient: str = option("bias", GRADIENTS)  # the reference ACS code clusters the C-dim bias gradient

    def solve(self, grads: torch.Tensor | FactoredGradients, k: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return facility_location(as_dense(grads), k)
