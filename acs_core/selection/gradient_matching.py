"""The shared shape of (adversarial) CRAIG and GradMatch: gradients -> groups -> solver -> weighted rows.

ACS: extract the objective's last-layer gradients at its adversarial points for every candidate (view=adversarial),
or at clean points with plain CE (view=clean: the original vanilla methods), then solve per class (or globally),
per sample or per fixed batch, and record how well the chosen weighted set matches the full gradient sum against a
random set of the same size.

Per-batch granularity: candidates are cut into fixed batches (a seeded permutation, within a class when per_class),
each batch is one atom whose gradient is the batch mean; a chosen batch contributes all its rows, each with the
batch's weight. The training loop shuffles coreset rows across batches and normalises each minibatch by the sum of
its weights, so rows of differently weighted batches meet in one minibatch and the weights change the loss (in the
reference code every row of a batch trains together, so equal weights cancel).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..config import ConfigError
from ..objectives import Objective
from .base import Coreset, SelectionContext, Selector
from .gradients import selection_gradients
from .rows import FactoredGradients, as_dense, as_rows
from .solvers import class_budgets, matching_error


@dataclass
class GradientMatchingSelector(Selector):
    """Options common to CRAIG and GradMatch; subclasses implement `solve(grads, k, generator)`."""

    view: str = "adversarial"
    per_class: bool = True
    granularity: str = "sample"
    batch: int = 128
    gradient: str = "full"

    def __post_init__(self) -> None:
        for key, value, valid in (("view", self.view, ("adversarial", "clean")), ("granularity", self.granularity, ("sample", "batch")),
                                  ("gradient", self.gradient, ("full", "bias"))):
            if value not in valid:
                raise ConfigError(f"selector.{key}: {value!r}; valid: {', '.join(valid)}")
        if self.batch < 1:
            raise ConfigError(f"selector.batch: {self.batch} < 1")

    def solve(self, grads: torch.Tensor | FactoredGradients, k: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Pick k rows of `grads` (a tensor, or factored full last-layer gradients) with weights (the solver)."""
        raise NotImplementedError

    def _objective(self, ctx: SelectionContext) -> Objective:
        """The run's own objective (adversarial view) or plain CE at clean points (clean view)."""
        if self.view == "clean":
            return Objective(eps=0.0, alpha=0.0, steps=0)
        return ctx.objective

    def _groups(self, ctx: SelectionContext) -> list[tuple[torch.Tensor, int]]:
        """(candidate rows, budget) per class, or one global group."""
        y = ctx.candidates.y.cpu()
        if not self.per_class:
            return [(torch.arange(len(y)), ctx.budget)]
        budgets = class_budgets(y, ctx.fraction, ctx.budget)
        return [(torch.nonzero(y == c).flatten(), k) for c, k in budgets.items()]

    def select(self, ctx: SelectionContext) -> Coreset:
        factored = selection_gradients(ctx.model, self._objective(ctx), ctx.candidates, torch.arange(len(ctx.candidates)),
                                       ctx.device, ctx.batch_size, ctx.timer)
        grads = factored.bias() if self.gradient == "bias" else factored
        rows, weights = [], []
        with ctx.timer("selection_solver"):
            for members, k in self._groups(ctx):
                if k == 0:
                    continue
                if self.granularity == "sample":
                    idx, w = self.solve(grads[members], k, ctx.generator)
                    rows.append(members[idx])
                    weights.append(w.float())
                    continue
                batches = members[torch.randperm(len(members), generator=ctx.generator)].split(self.batch)
                idx, w = self.solve(torch.stack([as_dense(grads[b]).mean(0) for b in batches]),
                                    min(len(batches), math.ceil(k / self.batch)), ctx.generator)
                rows += [batches[i] for i in idx.tolist()]
                weights += [torch.full((len(batches[i]),), float(wi)) for i, wi in zip(idx.tolist(), w.tolist())]
        indices, gammas = torch.cat(rows), torch.cat(weights)
        random_rows = torch.randperm(len(grads), generator=ctx.generator)[: len(indices)]
        info = {
            "matching_error": matching_error(grads, indices, gammas),
            "random_matching_error": matching_error(grads, random_rows, torch.full((len(random_rows),), len(grads) / len(random_rows))),
            "gradient_dims": math.prod(as_rows(grads).vector_shape),
        }
        return Coreset(indices, gammas, info)
