"""Accuracy of a model on a split, clean or under an attack; evaluation is always eval mode and fp32."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from .data import Split

Attack = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def correct_mask(model: nn.Module, split: Split, device: torch.device, batch_size: int, attack: Attack | None = None) -> torch.Tensor:
    """Per-example correctness (bool, on the CPU) on `split`, at attack(model, x, y) when an attack is given."""
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(split), batch_size):
        x, y = split.batch(torch.arange(start, min(start + batch_size, len(split))), device)
        if attack is not None:
            x = attack(model, x, y)
        with torch.no_grad():
            out.append((model(x).argmax(1) == y).cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool)


def accuracy(model: nn.Module, split: Split, device: torch.device, batch_size: int, attack: Attack | None = None) -> float:
    """Percentage of `split` classified correctly (under `attack` if given)."""
    mask = correct_mask(model, split, device, batch_size, attack)
    return 100.0 * mask.float().mean().item() if len(mask) else float("nan")
