"""`forgetting`: forgetting events (Toneva et al.) - keep the samples forgotten most often during proxy training.

A forgetting event is a presentation at which a sample that was classified correctly at its previous presentation
is misclassified; a sample never classified correctly counts as forgotten infinitely often (ranked first). Counts are
averaged over the proxy initialisations; equal counts (e.g. the many unforgettable samples) are ordered at random
with the selection's seed. view=adversarial: correctness at the objective's adversarial points. `source=run` is
refused: one model has no presentation history, and counting events across a run's selections would make a resumed
run depend on correctness records the checkpoint does not keep.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...config import ConfigError
from ..base import SELECTORS, SelectionContext
from ..statistics import forgetting_counts
from .families import ProxySelector


@SELECTORS.register("forgetting", "forgetting events during proxy training: keep the most forgotten (never learned first)")
@dataclass
class Forgetting(ProxySelector):
    def __post_init__(self) -> None:
        super().__post_init__()
        if self.source == "run":
            raise ConfigError("selector.source: forgetting counts events over proxy training, one model has none; use source=proxy")

    def prepare(self, ctx: SelectionContext) -> torch.Tensor:
        correct = self.statistic(ctx, "correct")  # (inits, epochs, n)
        return torch.stack([forgetting_counts(c) for c in correct]).mean(0)
