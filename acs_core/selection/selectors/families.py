"""The selector families, each a partial composition of the one shape (base.GroupSelector) that selectors finish:

* ScoreSelector: keep the k best-scored rows of each group (ties broken by the seeded generator), weights 1.
* ModelSelector: its data come from the current model at its view (views.outputs_at_view); the classic default, clean.
* ModelScoreSelector: a per-candidate score of the current model at the view.
* ProxySelector / EarlyProxySelector: rank per-sample statistics of the proxy runs (uses_scores), or with source=run
  the same statistics of the run's current model (statistics.model_stats); EarlyProxy at one proxy epoch.
* SubmodularSelector: a greedy on the cosine kernel of last-layer gradients or penultimate features, per group.
* GradientMatching: (Adv.) CRAIG and GradMatch - last-layer gradients at the view, solved per sample or per fixed
  batch, with the matching error of the chosen weighted set against a random set drawn as the `random` selector
  draws (class-balanced budgets when class_balanced), and of the coreset it replaces.
"""
from __future__ import annotations

import math
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ...config import ConfigError
from ...objectives import Objective
from ..algorithms.kernels import cosine_kernel
from ..algorithms.matching import matching_error
from ..algorithms.ranking import top_k
from ..base import GroupSelector, SelectionContext, option
from ..budgets import random_subset
from ..rows import FactoredGradients, as_dense, as_rows
from ..statistics import model_stats
from ..views import VIEWS, Outputs, outputs_at_view

SOURCES = ("proxy", "run")  # ProxySelector: the proxy runs' statistics, or the current model's
GRADIENTS = ("full", "bias")  # GradientMatching: the whole last layer's gradient (C + C*D), or its bias part (C)


@dataclass
class ScoreSelector(GroupSelector):
    """Keep the k best-scored rows of each group, weights 1; `prepare` returns one score per candidate."""

    keep_largest: ClassVar[bool] = True

    def pick(self, data: torch.Tensor, members: torch.Tensor, k: int, ctx: SelectionContext) -> tuple[torch.Tensor, torch.Tensor]:
        return top_k(data[members], k, self.keep_largest, ctx.generator), torch.ones(k)


@dataclass
class ModelSelector(GroupSelector):
    """A selector whose data come from the current model, at clean points or the objective's adversarial points."""

    view: str = option("clean", VIEWS)

    def outputs(self, ctx: SelectionContext, gradients: bool = False, objective: Objective | None = None) -> Outputs:
        """The candidates at the view; `objective`: the attack and loss of view=adversarial (default: the run's)."""
        return outputs_at_view(ctx.model, objective or ctx.objective, ctx.candidates, self.view, ctx.device,
                               ctx.batch_size, ctx.timer, gradients)


@dataclass
class ModelScoreSelector(ModelSelector, ScoreSelector):
    """A per-candidate score of the current model at the view."""


@dataclass
class ProxySelector(ModelScoreSelector):
    """Ranks per-sample statistics, shape (inits, epochs, n, ...) each: of the proxy runs (source=proxy, ctx.scores; the
    papers' definition, static by nature) or of the run's current model at this selection (source=run, shape
    (1, 1, n, ...); a dynamic run re-ranks them on the model it is training)."""

    source: str = option("proxy", SOURCES)

    @property  # type: ignore[override]
    def uses_scores(self) -> bool:
        """Only source=proxy reads proxy scores (train.select_coreset computes them once when no file is given)."""
        return self.source == "proxy"

    def statistic(self, ctx: SelectionContext, name: str) -> torch.Tensor:
        """One statistic of the view: from the proxy scores, or computed with ctx.model over all candidates."""
        if self.source == "run":
            return model_stats(ctx.model, ctx.objective, ctx.candidates, self.view, ctx.device, ctx.batch_size,
                               ctx.timer)[f"{self.view}_{name}"]
        if ctx.scores is None:
            raise ConfigError(f"scores: selector needs per-sample proxy scores; pass scores=FILE from `acs score` ({name})")
        return ctx.scores.stat(self.view, name, ctx.objective)

    def info(self, data: Any, indices: torch.Tensor, weights: torch.Tensor, ctx: SelectionContext) -> dict[str, Any]:
        if self.source == "run":
            return {"scores_source": "run"}
        assert ctx.scores is not None
        return {"proxy_seconds": ctx.scores.meta["seconds"], "proxy_cpu_seconds": ctx.scores.job_compute().get("cpu_seconds"),
                "scores_source": ctx.scores.source}


@dataclass
class EarlyProxySelector(ProxySelector):
    """A statistic at one proxy epoch (GraNd, EL2N: 'early in training'), averaged over the initialisations; with
    source=run the current model's."""

    epoch: int | None = option(None, minimum=1)  # 1..proxy_epochs; None: the last proxy epoch

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.epoch is not None and self.source == "run":
            raise ConfigError("selector.epoch: picks a proxy epoch, but source=run scores the current model; "
                              "drop selector.epoch or use source=proxy")

    def at_epoch(self, ctx: SelectionContext, name: str) -> torch.Tensor:
        stat = self.statistic(ctx, name)
        epochs = stat.shape[1]
        if self.epoch is not None and self.epoch > epochs:
            raise ConfigError(f"selector.epoch: {self.epoch} > the {epochs} proxy epochs of the scores")
        return stat[:, (self.epoch or epochs) - 1].float().mean(0)


@dataclass
class SubmodularSelector(ModelSelector):
    """Greedy on the cosine kernel (1 + cos) / 2 of last-layer gradients (space=gradients, as DeepCore) or
    penultimate features, per group."""

    space: str = option("gradients", ("gradients", "features"))

    def prepare(self, ctx: SelectionContext) -> torch.Tensor:
        if self.space == "features":
            return self.outputs(ctx).features
        grads = self.outputs(ctx, gradients=True).gradients
        assert grads is not None
        return grads.dense()

    @abstractmethod
    def maximise(self, kernel: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """k picks (positions) and weights on one group's kernel."""

    def pick(self, data: torch.Tensor, members: torch.Tensor, k: int, ctx: SelectionContext) -> tuple[torch.Tensor, torch.Tensor]:
        return self.maximise(cosine_kernel(data[members.to(data.device)]), k)


@dataclass
class GradientMatching(ModelSelector):
    """(Adv.) CRAIG and GradMatch: the view's last-layer gradients of every candidate (view=adversarial: the run
    objective's loss at its own adversarial points, the ACS methods; view=clean: plain CE at clean points, the original
    methods), solved per group, and how well the chosen weighted set matches the full gradient sum against a random
    set of the same size drawn as the `random` selector draws (budgets.random_subset, same class_balanced), and - at a
    reselection - how well the previous coreset still matches it at the current model (how stale it became).

    Per-batch granularity: each group's candidates are cut into fixed batches of `batch` rows - consecutive in the
    candidate order (batch_order=sequential, the reference's loader order; label-agnostic with class_balanced=false,
    the reference's CRAIGPB / GradMatchPB) or after a seeded permutation (batch_order=random) - and each batch is one
    atom whose gradient is the batch mean; a chosen batch contributes all its rows, each with the batch's weight. The
    training loop shuffles coreset rows across batches and normalises each minibatch by the sum of its weights, so rows
    of differently weighted batches meet in one minibatch and the weights change the loss (in the reference code every
    row of a batch trains together, so equal weights cancel).

    attack_steps: the selection attack's steps (default: the training attack's), with the same total step length.
    """

    view: str = option("adversarial", VIEWS)
    granularity: str = option("sample", ("sample", "batch"))
    batch: int = option(128, minimum=1)
    batch_order: str = option("sequential", ("sequential", "random"))
    gradient: str = option("full", GRADIENTS)
    attack_steps: int | None = option(None, minimum=1)

    @abstractmethod
    def solve(self, grads: torch.Tensor | FactoredGradients, k: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Pick k rows of `grads` (a tensor, or factored full last-layer gradients) with weights (the solver)."""

    def prepare(self, ctx: SelectionContext) -> torch.Tensor | FactoredGradients:
        objective = ctx.objective if self.attack_steps is None else ctx.objective.with_steps(self.attack_steps)
        grads = self.outputs(ctx, gradients=True, objective=objective).gradients
        assert grads is not None
        factored = grads.to()  # on the CPU, where the solvers run
        return factored.bias() if self.gradient == "bias" else factored

    def pick(self, data: torch.Tensor | FactoredGradients, members: torch.Tensor, k: int,
             ctx: SelectionContext) -> tuple[torch.Tensor, torch.Tensor]:
        if self.granularity == "sample":
            return self.solve(data[members], k, ctx.generator)
        order = torch.arange(len(members)) if self.batch_order == "sequential" else torch.randperm(len(members), generator=ctx.generator)
        batches = order.split(self.batch)  # positions into members
        idx, w = self.solve(torch.stack([as_dense(data[members[b]]).mean(0) for b in batches]),
                            min(len(batches), math.ceil(k / self.batch)), ctx.generator)
        return (torch.cat([batches[i] for i in idx.tolist()]),
                torch.cat([torch.full((len(batches[i]),), float(wi)) for i, wi in zip(idx.tolist(), w.tolist())]))

    def info(self, data: torch.Tensor | FactoredGradients, indices: torch.Tensor, weights: torch.Tensor,
             ctx: SelectionContext) -> dict[str, Any]:
        rows = random_subset(ctx.candidates.y.cpu(), ctx.fraction, len(indices), self.class_balanced, ctx.generator)
        out = {
            "matching_error": matching_error(data, indices, weights),
            "random_matching_error": matching_error(data, rows, torch.full((len(rows),), len(data) / len(rows))),
            "gradient_dims": math.prod(as_rows(data).vector_shape),
        }
        if ctx.previous is not None:  # the coreset in use until now, at the current model
            out["previous_matching_error"] = matching_error(data, ctx.previous.indices, ctx.previous.weights)
        if self.granularity == "batch":  # Selector.select's per-batch size rule, with what it gave against the budget
            out["size_rule"] = f"whole batches of {self.batch}: ceil(k / {self.batch}) per group of budget k"
            out["budget"] = ctx.budget
        return out
