"""`uncertainty`: keep the samples the current model is least sure about - least confidence (1 - max p), entropy,
or margin (the smallest gap between the two most probable classes). Every variant keeps the MOST uncertain, also on
the global path (DeepCore's unbalanced path keeps the least uncertain). view=adversarial: predictions at x~."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..base import SELECTORS, SelectionContext, option
from .families import ModelScoreSelector


@SELECTORS.register("uncertainty", "keep the most uncertain predictions: score=least_confidence | entropy | margin")
@dataclass
class Uncertainty(ModelScoreSelector):
    score: str = option("least_confidence", ("least_confidence", "entropy", "margin"))

    def prepare(self, ctx: SelectionContext) -> torch.Tensor:
        log_p = self.outputs(ctx).log_probs
        p = log_p.exp()
        if self.score == "least_confidence":
            return 1.0 - p.max(1).values
        if self.score == "entropy":
            return -(p * log_p).sum(1)
        top2 = p.topk(2, dim=1).values
        return top2[:, 1] - top2[:, 0]  # minus the margin: the smallest margin ranks first
