"""`cal`: Contrastive Active Learning (Margatina et al.) as a coreset - keep the samples whose prediction diverges
most (mean symmetric KL) from those of their k nearest neighbours in the current model's feature space. Neighbours
are searched among all candidates. Keeps the LARGEST divergence (DeepCore keeps the lowest). view=adversarial:
features and predictions at x~."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..algorithms.kernels import nearest_neighbours, symmetric_kl
from ..base import SELECTORS, SelectionContext, option
from .families import ModelScoreSelector


@SELECTORS.register("cal", "contrastive: keep the largest mean symmetric KL to the k nearest neighbours in feature space")
@dataclass
class Cal(ModelScoreSelector):
    k: int = option(10, minimum=1)

    def prepare(self, ctx: SelectionContext) -> torch.Tensor:
        out = self.outputs(ctx)
        log_p = out.log_probs
        nn_idx = nearest_neighbours(out.features, self.k)
        return symmetric_kl(log_p[:, None, :], log_p[nn_idx]).mean(1).cpu()
