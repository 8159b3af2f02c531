"""`log_determinant`: greedy log det(K_SS + lam I) (a DPP MAP / diversity objective, as in DeepCore) over the
cosine kernel of last-layer gradients (or features) at the view."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..algorithms.submodular import log_det_greedy
from ..base import SELECTORS, option
from .families import SubmodularSelector


@SELECTORS.register("log_determinant", "greedy log det(K_S + lam I) on the cosine kernel of last-layer gradients (space=features too)")
@dataclass
class LogDeterminant(SubmodularSelector):
    lam: float = option(1.0, minimum=1e-12)

    def maximise(self, kernel: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        return log_det_greedy(kernel, k, self.lam), torch.ones(k)
