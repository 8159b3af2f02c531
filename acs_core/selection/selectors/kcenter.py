"""`kcenter`: k-center greedy (Sener & Savarese) on the current model's penultimate features: start from a random
sample (the selection's seed), then repeatedly add the sample farthest from all chosen ones. view=adversarial:
features at x~."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..algorithms.kcenter import kcenter_greedy
from ..base import SELECTORS, SelectionContext
from .families import ModelSelector


@SELECTORS.register("kcenter", "k-center greedy on penultimate features: cover the feature space with k centres")
@dataclass
class KCenter(ModelSelector):
    def prepare(self, ctx: SelectionContext) -> torch.Tensor:
        return self.outputs(ctx).features.float()

    def pick(self, data: torch.Tensor, members: torch.Tensor, k: int, ctx: SelectionContext) -> tuple[torch.Tensor, torch.Tensor]:
        pts = data[members.to(data.device)]
        return kcenter_greedy(lambda j: (pts - pts[j]).norm(dim=1), len(pts), k, ctx.generator), torch.ones(k)
