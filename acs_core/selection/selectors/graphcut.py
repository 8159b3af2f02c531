"""`graphcut`: submodular graph cut (Iyer et al., as in DeepCore) - greedy on f(S) = sum_{i in V, j in S} K_ij -
lam * sum_{i, j in S} K_ij over the cosine kernel of last-layer gradients (or features) at the view."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..algorithms.submodular import graph_cut_greedy
from ..base import SELECTORS, option
from .families import SubmodularSelector


@SELECTORS.register("graphcut", "submodular graph cut, greedy, on the cosine kernel of last-layer gradients (space=features too)")
@dataclass
class GraphCut(SubmodularSelector):
    lam: float = option(1.0, minimum=0.0)

    def maximise(self, kernel: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        return graph_cut_greedy(kernel, k, self.lam), torch.ones(k)
