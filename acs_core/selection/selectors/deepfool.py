"""`deepfool`: keep the samples closest to the decision boundary - the smallest l2 DeepFool perturbation that
changes the current model's prediction (Moosavi-Dezfooli et al.; Ducoffe & Precup's margin-based selection).
view=adversarial: the distance from the objective's adversarial point x~ instead of x."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..base import SELECTORS, SelectionContext, option
from ..statistics import deepfool_distance
from ..views import view_chunks
from .families import ModelScoreSelector


@SELECTORS.register("deepfool", "keep the samples with the smallest DeepFool distance to the current model's boundary")
@dataclass
class DeepFool(ModelScoreSelector):
    max_iter: int = option(50, minimum=1)
    overshoot: float = option(0.02, minimum=0.0)

    keep_largest = False

    def prepare(self, ctx: SelectionContext) -> torch.Tensor:
        out = []
        for x, x_adv, _ in view_chunks(ctx.model, ctx.objective, ctx.candidates, self.view, ctx.device, ctx.batch_size, ctx.timer):
            with ctx.timer("selection_features"):
                out.append(deepfool_distance(ctx.model, x if x_adv is None else x_adv, self.max_iter, self.overshoot).cpu())
        return torch.cat(out)
