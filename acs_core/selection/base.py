"""The selection framework: a selector turns a SelectionContext into a Coreset (candidate rows and their loss weights).

The one shape (`GroupSelector.select`): `prepare` computes what the selector needs about all candidates, once (model
outputs at its view, proxy statistics, gradients); the budget policy (`budgets.groups`) splits the budget per class
(class_balanced=true, the default) or keeps one global group; `pick` chooses k rows of each group with their
weights; `info` sees the prepared data and the result and adds diagnostics to the selection record. Only `full` and
`random`, which read nothing, implement `select` directly.

Options are dataclass fields (given as selector.KEY=VALUE); their allowed values live in the field metadata
(`option(...)`) and are checked on construction, so bad input fails before anything runs.

Views, one rule: a selector that reads the model takes `view` = clean (the original images, plain CE) or adversarial
(the run objective's own points x~ and loss; views.py). Its default is the point its paper defines it at:
adversarial for Adv. CRAIG and Adv. GradMatch (ACS), clean for every classic method. A selector that reads no model
outputs (full, random) has view None.

What the workflow reads on every instance: `uses_coreset` (False only for full), `uses_scores` (ranks per-sample proxy
scores) and `view`.
"""
from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import torch

from ..config import ConfigError
from ..data import Split
from ..models import Classifier
from ..objectives import Objective
from ..registry import Registry
from ..scores import ProxyScores
from ..timing import PhaseTimer
from .budgets import groups


@dataclass
class Coreset:
    """Rows of the candidate split, their loss weights gamma (> 0), and diagnostics for the record."""

    indices: torch.Tensor
    weights: torch.Tensor
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class SelectionContext:
    """Everything a selector may use; it must not touch the test split (it never receives it)."""

    model: Classifier
    objective: Objective
    candidates: Split
    budget: int
    fraction: float
    num_classes: int
    generator: torch.Generator
    device: torch.device
    batch_size: int
    timer: PhaseTimer
    epoch: int
    validation: Split | None = None  # held-out validation split (Glister's objective); never the test split
    scores: ProxyScores | None = None  # per-sample proxy scores, for selectors with uses_scores
    lr: float = 0.0  # the run's learning rate at this epoch (Glister's one-step Taylor update)
    previous: Coreset | None = None  # the coreset this selection replaces (diagnostics: how stale it became)


def option(default: Any, choices: tuple[Any, ...] | None = None, minimum: float | None = None) -> Any:
    """A selector option: its default and, for validation, its allowed values or its minimum."""
    return field(default=default, metadata={"choices": choices, "minimum": minimum})


class Selector(ABC):
    """Base of every selector. Subclasses are dataclasses whose fields are their options."""

    uses_coreset: bool = True  # False only for `full`: the schedule then trains every epoch on all data
    uses_scores: bool = False  # True: ranks per-sample proxy scores (ctx.scores, from `acs score` or the run's proxy)
    view: str | None = None  # the points it reads the model at (a field of every selector that reads the model)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value, choices, minimum = getattr(self, f.name), f.metadata.get("choices"), f.metadata.get("minimum")
            if choices is not None and value not in choices:
                raise ConfigError(f"selector.{f.name}: {value!r}; valid: {', '.join(map(str, choices))}")
            if minimum is not None and value is not None and not value >= minimum:
                raise ConfigError(f"selector.{f.name}: {value!r} must be >= {minimum}")

    @abstractmethod
    def select(self, ctx: SelectionContext) -> Coreset:
        """The coreset of this selection: exactly ctx.budget distinct candidate rows with weights > 0 - except at
        per-batch granularity (GradientMatching), whose atoms are whole batches: ceil(k / batch) of them per group of
        budget k, so the coreset holds their rows, up to batch - 1 more or fewer than k (a group's last batch may be
        short), as the reference's CRAIGPB / GradMatchPB; its info records that rule (`size_rule`)."""


@dataclass
class GroupSelector(Selector):
    """The one shape: prepare once, split the budget by the budget policy, pick per group, report."""

    class_balanced: bool = True

    @abstractmethod
    def prepare(self, ctx: SelectionContext) -> Any:
        """What pick needs about all candidates (scores, features, gradients, ...), computed once per selection."""

    @abstractmethod
    def pick(self, data: Any, members: torch.Tensor, k: int, ctx: SelectionContext) -> tuple[torch.Tensor, torch.Tensor]:
        """k positions into `members` (candidate rows of one group) and their weights."""

    def info(self, data: Any, indices: torch.Tensor, weights: torch.Tensor, ctx: SelectionContext) -> dict[str, Any]:
        """Diagnostics for the selection record, from the prepared data and the chosen rows and weights."""
        return {}

    def select(self, ctx: SelectionContext) -> Coreset:
        data = self.prepare(ctx)
        rows, weights = [], []
        with ctx.timer("selection_solver"):
            for members, k in groups(ctx.candidates.y, ctx.fraction, ctx.budget, self.class_balanced):
                idx, w = self.pick(data, members, k, ctx)
                rows.append(members[idx.cpu()])
                weights.append(w.cpu().float())
        indices, gammas = torch.cat(rows), torch.cat(weights)
        return Coreset(indices, gammas, self.info(data, indices, gammas, ctx))


SELECTORS: Registry[type[Selector]] = Registry("selector")


def build_selector(name: str, options: dict[str, Any]) -> Selector:
    """Instantiate a registered selector with its options; an unknown option names the valid ones."""
    cls = SELECTORS.get(name)
    valid = [f.name for f in dataclasses.fields(cls)] if dataclasses.is_dataclass(cls) else []
    for key in options:
        if key not in valid:
            raise ConfigError(f"selector.{key}: not an option of selector {name!r}; valid: {', '.join(valid) or 'none'}")
    return cls(**options)
