"""`random`: a uniformly random subset of the budget, class-balanced by default, all weights 1."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data import sample_per_class
from .base import SELECTORS, Coreset, SelectionContext, Selector
from .solvers import class_budgets


@SELECTORS.register("random", "uniform random subset with weights 1; class_balanced=true keeps class shares")
@dataclass
class Random(Selector):
    class_balanced: bool = True

    def select(self, ctx: SelectionContext) -> Coreset:
        y = ctx.candidates.y
        if self.class_balanced:
            chosen = sample_per_class(y, class_budgets(y, ctx.fraction, ctx.budget), ctx.generator)  # sorted
        else:
            chosen = torch.sort(torch.randperm(len(y), generator=ctx.generator)[: ctx.budget]).values
        return Coreset(chosen, torch.ones(len(chosen)))
