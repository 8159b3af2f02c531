"""`herding`: herding (Welling; the iCaRL exemplar rule) on penultimate features - each step adds the sample that
brings the mean of the chosen set CLOSEST to the mean of its group (DeepCore takes the farthest). view=adversarial:
features at x~."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..algorithms.herding import herding
from ..base import SELECTORS, SelectionContext
from .families import ModelSelector


@SELECTORS.register("herding", "herding on penultimate features: the chosen mean tracks the group mean")
@dataclass
class Herding(ModelSelector):
    def prepare(self, ctx: SelectionContext) -> torch.Tensor:
        return self.outputs(ctx).features

    def pick(self, data: torch.Tensor, members: torch.Tensor, k: int, ctx: SelectionContext) -> tuple[torch.Tensor, torch.Tensor]:
        return herding(data[members.to(data.device)], k), torch.ones(k)
