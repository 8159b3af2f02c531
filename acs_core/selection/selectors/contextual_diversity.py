"""`contextual_diversity`: Contextual Diversity (Agarwal et al.) as in the robustness study - k-center greedy on the
current model's softmax outputs with the symmetric KL divergence as the distance. view=adversarial: outputs at x~."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..algorithms.kcenter import kcenter_greedy
from ..algorithms.kernels import symmetric_kl
from ..base import SELECTORS, SelectionContext
from .families import ModelSelector


@SELECTORS.register("contextual_diversity", "k-center greedy on softmax outputs with symmetric-KL distance")
@dataclass
class ContextualDiversity(ModelSelector):
    def prepare(self, ctx: SelectionContext) -> torch.Tensor:
        return self.outputs(ctx).log_probs

    def pick(self, data: torch.Tensor, members: torch.Tensor, k: int, ctx: SelectionContext) -> tuple[torch.Tensor, torch.Tensor]:
        log_p = data[members.to(data.device)]
        return kcenter_greedy(lambda j: symmetric_kl(log_p, log_p[j]), len(log_p), k, ctx.generator), torch.ones(k)
