"""`grand`: GraNd (Paul et al.) - keep the largest norm of the loss gradient early in training, averaged over
several proxy initialisations. As in DeepCore the gradient is the last layer's (bias and weight); view=adversarial
differentiates the objective's own loss at its adversarial points (adversarial GraNd). `source=run`: the norm at the
run's current model (re-ranked at every dynamic reselection)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..base import SELECTORS, SelectionContext
from .families import EarlyProxySelector


@SELECTORS.register("grand", "GraNd: keep the largest last-layer loss-gradient norm at a proxy epoch, averaged over proxy inits (source=run: current model)")
@dataclass
class GraNd(EarlyProxySelector):
    def prepare(self, ctx: SelectionContext) -> torch.Tensor:
        return self.at_epoch(ctx, "grand")
