"""`full`: no coreset - every epoch trains on all candidates (the baseline every speed-up is measured against)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..base import SELECTORS, Coreset, SelectionContext, Selector


@SELECTORS.register("full", "no selection: train on the whole training set every epoch (the baseline)")
@dataclass
class Full(Selector):
    uses_coreset = False

    def select(self, ctx: SelectionContext) -> Coreset:
        n = len(ctx.candidates)
        return Coreset(torch.arange(n), torch.ones(n))
