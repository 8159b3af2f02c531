"""The epoch plan of a (warm-started) coreset run and the learning rate indexed by absolute epoch."""
from __future__ import annotations

import math
from dataclasses import dataclass

from .config import RunConfig

FULL, SKIP, CORESET = "full", "skip", "coreset"


@dataclass(frozen=True)
class Schedule:
    """Epochs [0, full_end) full data, [full_end, warm_end) skipped, [warm_end, E) coreset, reselecting every T
    counted from warm_end (anchor "warm_end") or from epoch 0 (anchor "zero", the ACS reference's `epoch % T == 0`).

    With warm start kappa the run spends round(c * int(kappa*E)) epochs on full data and skips the rest of the
    warm-up, so its compute is comparable to "a fraction c of the epochs" (the ACS reference's "warm" variants).
    A run without a coreset (selector `full`) trains every epoch on the full data. A static schedule selects once, at
    the first coreset epoch, and keeps that coreset to the end. Under anchor "zero" the coreset epochs before the first
    multiple of T train on a uniform random subset with weights 1 (`draws_initial`), as the reference's do.
    """

    epochs: int
    fraction: float = 1.0
    kappa: float = 0.0
    interval: int = 1
    coreset: bool = False
    static: bool = False
    anchor: str = "warm_end"

    @property
    def warm_end(self) -> int:
        return int(self.kappa * self.epochs) if self.coreset else 0

    @property
    def full_end(self) -> int:
        return round(self.fraction * self.warm_end) if self.coreset else self.epochs

    def phase(self, epoch: int) -> str:
        if epoch < self.full_end:
            return FULL
        return SKIP if epoch < self.warm_end else CORESET

    def selects(self, epoch: int) -> bool:
        """True on the epochs that (re)select the coreset."""
        if self.phase(epoch) != CORESET:
            return False
        if self.static:
            return epoch == self.warm_end
        return (epoch - (self.warm_end if self.anchor == "warm_end" else 0)) % self.interval == 0

    def draws_initial(self, epoch: int) -> bool:
        """True on the first coreset epoch when it selects nothing (anchor zero, warm_end not a multiple of T): the
        epochs up to the first selection train on a uniform random subset with weights 1."""
        return self.coreset and epoch == self.warm_end < self.epochs and not self.selects(epoch)

    @classmethod
    def from_config(cls, cfg: RunConfig, coreset: bool) -> "Schedule":
        return cls(cfg.epochs, cfg.fraction, cfg.kappa, cfg.select_every, coreset, cfg.selection == "static",
                   cfg.select_anchor)


def learning_rate(cfg: RunConfig, epoch: int) -> float:
    """LR at an absolute epoch: step (x lr_gamma at each milestone passed), cosine to 0 over E epochs, or constant."""
    if cfg.lr_schedule == "step":
        return cfg.lr * cfg.lr_gamma ** sum(epoch >= m for m in cfg.milestones)
    if cfg.lr_schedule == "cosine":
        return 0.5 * cfg.lr * (1 + math.cos(math.pi * epoch / cfg.epochs))
    return cfg.lr
