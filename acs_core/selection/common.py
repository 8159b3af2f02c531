"""The shape every zoo selector shares: prepare once (model outputs or proxy scores), then pick per class or globally.

`ZooSelector.select` computes the selector's data once (`prepare`), splits the budget into per-class budgets
(`solvers.class_budgets`, default) or one global group, and lets the selector `pick` rows of each group. Options are
dataclass fields; their allowed values live in the field metadata (`option(...)`) and are checked on construction,
so bad input fails before anything runs. `ScoreSelector` keeps the best-scored rows with ties broken by the seeded
generator; `ModelSelector` adds `view`; `ProxySelector` ranks per-sample statistics of the proxy runs (`uses_scores`)
or, with `source=run`, the same statistics of the run's current model.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from ..config import ConfigError
from .base import Coreset, SelectionContext, Selector
from .features import VIEWS, Outputs, outputs_at_view
from .solvers import class_budgets

SOURCES = ("proxy", "run")  # ProxySelector: the proxy runs' statistics, or the current model's


def option(default: Any, choices: tuple[Any, ...] | None = None, minimum: float | None = None) -> Any:
    """A selector option: its default and, for validation, its allowed values or its minimum."""
    return field(default=default, metadata={"choices": choices, "minimum": minimum})


def groups(y: torch.Tensor, fraction: float, budget: int, class_balanced: bool) -> list[tuple[torch.Tensor, int]]:
    """(candidate rows, budget) per class (class_budgets: ceil(c * n_c) trimmed to the total) or one global group."""
    y = y.cpu()
    if not class_balanced:
        return [(torch.arange(len(y)), budget)]
    return [(torch.nonzero(y == c).flatten(), k) for c, k in class_budgets(y, fraction, budget).items() if k > 0]


def top_k(scores: torch.Tensor, k: int, largest: bool, generator: torch.Generator) -> torch.Tensor:
    """Positions of the k largest (or smallest) scores; equal scores are ordered by a random permutation."""
    if torch.isnan(scores).any():
        raise ValueError("scores contain NaN")
    order = torch.randperm(len(scores), generator=generator)
    ranked = torch.sort(scores.cpu()[order], descending=largest, stable=True).indices[:k]
    return order[ranked]


@dataclass
class ZooSelector(Selector):
    """Base of the zoo: class-balanced (default) or global budgets; subclasses implement prepare and pick."""

    class_balanced: bool = True

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value, choices, minimum = getattr(self, f.name), f.metadata.get("choices"), f.metadata.get("minimum")
            if choices is not None and value not in choices:
                raise ConfigError(f"selector.{f.name}: {value!r}; valid: {', '.join(map(str, choices))}")
            if minimum is not None and value is not None and not value >= minimum:
                raise ConfigError(f"selector.{f.name}: {value!r} must be >= {minimum}")

    def prepare(self, ctx: SelectionContext) -> Any:
        """What pick needs about all candidates (scores, features, ...), computed once per selection."""
        raise NotImplementedError

    def pick(self, data: Any, members: torch.Tensor, k: int, ctx: SelectionContext) -> tuple[torch.Tensor, torch.Tensor]:
        """k positions into `members` (candidate rows of one group) and their weights."""
        raise NotImplementedError

    def info(self, ctx: SelectionContext) -> dict[str, Any]:
        """Diagnostics for the selection record."""
        return {}

    def select(self, ctx: SelectionContext) -> Coreset:
        data = self.prepare(ctx)
        rows, weights = [], []
        with ctx.timer("selection_solver"):
            for members, k in groups(ctx.candidates.y, ctx.fraction, ctx.budget, self.class_balanced):
                idx, w = self.pick(data, members, k, ctx)
                rows.append(members[idx.cpu()])
                weights.append(w.cpu().float())
        return Coreset(torch.cat(rows), torch.cat(weights), self.info(ctx))


@dataclass
class ScoreSelector(ZooSelector):
    """Keep the k best-scored rows of each group, weights 1; `prepare` returns one score per candidate."""

    keep_largest: ClassVar[bool] = True

    def pick(self, data: torch.Tensor, members: torch.Tensor, k: int, ctx: SelectionContext) -> tuple[torch.Tensor, torch.Tensor]:
        return top_k(data[members], k, self.keep_largest, ctx.generator), torch.ones(k)


@dataclass
class ModelSelector(ZooSelector):
    """A selector whose data come from the current model, at clean points or the objective's adversarial points."""

    view: str = option("clean", VIEWS)

    def outputs(self, ctx: SelectionContext, gradients: bool = False) -> Outputs:
        return outputs_at_view(ctx.model, ctx.objective, ctx.candidates, self.view, ctx.device, ctx.batch_size,
                               ctx.timer, gradients)


@dataclass
class ModelScoreSelector(ModelSelector, ScoreSelector):
    """A per-candidate score of the current model at the view."""


@dataclass
class ProxySelector(ScoreSelector):
    """Ranks per-sample statistics, shape (inits, epochs, n, ...) each: of the proxy runs (source=proxy, ctx.scores; the
    papers' definition, static by nature) or of the run's current model at this selection (source=run, shape
    (1, 1, n, ...); a dynamic run re-ranks them on the model it is training)."""

    view: str = option("clean", VIEWS)
    source: str = option("proxy", SOURCES)

    @property  # type: ignore[override]
    def uses_scores(self) -> bool:
        """Only source=proxy reads proxy scores (train.select_coreset computes them once when no file is given)."""
        return self.source == "proxy"

    def statistic(self, ctx: SelectionContext, name: str) -> torch.Tensor:
        """One statistic of the view: from the proxy scores, or computed with ctx.model over all candidates."""
        if self.source == "run":
            from ..proxy import model_stats  # proxy imports the selection package

            return model_stats(ctx.model, ctx.objective, ctx.candidates, self.view, ctx.device, ctx.batch_size,
                               ctx.timer)[f"{self.view}_{name}"]
        if ctx.scores is None:
            raise ConfigError(f"scores: selector needs per-sample proxy scores; pass scores=FILE from `acs score` ({name})")
        return ctx.scores.stat(self.view, name, ctx.objective)

    def info(self, ctx: SelectionContext) -> dict[str, Any]:
        if self.source == "run":
            return {"scores_source": "run"}
        assert ctx.scores is not None
        return {"proxy_seconds": ctx.scores.meta["seconds"], "scores_source": ctx.scores.source}


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
