"""A thin adapter around the reference AutoAttack (PyPI `pyautoattack`): explicit device, fixed seed, our norm names.

pyautoattack's defaults are unsafe for us: its device is the CPU whatever the model's, and without a seed each attack
reseeds from the clock. Both are always passed here. The package is imported only where AutoAttack is used (a suite
with AutoAttack checks it when it is built), so that the rest of acs_core works without it; a missing package is a
one-line error.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Any, Iterator

import torch
import torch.nn as nn

NORMS = {"linf": "Linf", "l2": "L2"}
AA_ITERATIONS = 100  # APGD / FAB iterations of every AutoAttack version (for the record)
LOGGER = "auto-attack"  # the logger pyautoattack reports its checks on


def import_autoattack() -> Any:
    """pyautoattack's AutoAttack class, or a one-line ModuleNotFoundError saying how to install it."""
    try:
        from pyautoattack import AutoAttack
    except ImportError:
        raise ModuleNotFoundError("AutoAttack needs the pyautoattack package: pip install --no-deps pyautoattack") from None
    return AutoAttack


def autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str, seed: int,
               batch_size: int, device: torch.device, version: str = "standard",
               attacks: tuple[str, ...] = ()) -> torch.Tensor:
    """AutoAttack's adversarial inputs for (x, y) (misclassified or robust points are returned unchanged), run on
    `device` (the caller's: a model need not have parameters to tell it); `attacks` lists the components of
    version='custom' (e.g. ("apgd-ce", "apgd-dlr")), which run at the standard version's settings (one restart each,
    AA_ITERATIONS iterations), not at pyautoattack's own custom defaults (5 APGD and FAB restarts)."""
    AutoAttack = import_autoattack()
    adversary = AutoAttack(model, norm=NORMS[norm], eps=eps, version="standard" if version == "custom" else version,
                           seed=seed, device=device)
    if version == "custom":
        adversary.attacks_to_run = list(attacks)
    x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=batch_size)
    return x_adv.detach()


class _Collect(logging.Handler):
    """Keeps the messages AutoAttack logs at WARNING level (its own reliability checks) instead of printing them."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() not in self.messages:
            self.messages.append(record.getMessage())


@contextmanager
def collected_warnings() -> Iterator[list[str]]:
    """Collect (deduplicated) the warnings of AutoAttack's self-checks (zero gradients, Square beating the gradient
    attacks, randomised or dynamic models) logged inside the block."""
    handler = _Collect()
    logger = logging.getLogger(LOGGER)
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)
