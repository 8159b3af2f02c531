"""`el2n`: EL2N (Paul et al.) - keep the largest ||softmax(f(x)) - onehot(y)||_2 early in training, averaged over
several proxy initialisations; view=adversarial evaluates it at the objective's adversarial points. `source=run`: the
norm at the run's current model (re-ranked at every dynamic reselection)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..base import SELECTORS, SelectionContext
from .families import EarlyProxySelector


@SELECTORS.register("el2n", "EL2N: keep the largest error-vector norm at a proxy epoch, averaged over proxy inits (source=run: current model)")
@dataclass
class EL2N(EarlyProxySelector):
    def prepare(self, ctx: SelectionContext) -> torch.Tensor:
        return self.at_epoch(ctx, "el2n")
