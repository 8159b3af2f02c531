"""`facility_location`: submodular facility location f(S) = sum_i max_{j in S} K_ij (DeepCore's FacilityLocation)
over the cosine kernel of last-layer gradients (or features) at the view, by the exact lazy greedy of
algorithms.facility_location.facility_location_lazy. Weights 1; `weighted=true` gives each pick its cluster size (as CRAIG does)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..algorithms.facility_location import facility_location_lazy
from ..base import SELECTORS
from .families import SubmodularSelector


@SELECTORS.register("facility_location", "submodular facility location, lazy greedy, on the cosine kernel of last-layer gradients")
@dataclass
class FacilityLocation(SubmodularSelector):
    weighted: bool = False

    def maximise(self, kernel: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx, sizes = facility_location_lazy(kernel, k)
        return idx, sizes.float() if self.weighted else torch.ones(k)
