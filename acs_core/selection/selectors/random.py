"""`random`: a uniformly random subset of the budget, class-balanced by default (the budget policy's class budgets,
drawn per class by data.sample_per_class: budgets.random_subset), all weights 1; rows sorted."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..base import SELECTORS, Coreset, SelectionContext, Selector
from ..budgets import random_subset


@SELECTORS.register("random", "uniform random subset with weights 1; class_balanced=true keeps class shares")
@dataclass
class Random(Selector):
    class_balanced: bool = True

    def select(self, ctx: SelectionContext) -> Coreset:
        chosen = random_subset(ctx.candidates.y, ctx.fraction, ctx.budget, self.class_balanced, ctx.generator)
        return Coreset(chosen, torch.ones(len(chosen)))
