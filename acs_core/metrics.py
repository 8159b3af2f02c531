"""Accuracy of a model on a split, clean or under an attack: eval mode, exact counts, per-example masks.

Shared by the training loop's validation and final evaluation and by the evaluation suites."""
from __future__ import annotations

import torch
import torch.nn as nn
from tqdm import tqdm

from .attacks import Attack
from .data import Split


def correct_mask(model: nn.Module, split: Split, device: torch.device, batch_size: int, attack: Attack | None = None,
                 progress: str | None = None) -> torch.Tensor:
    """Per-example correctness (bool, on the CPU) on `split`, at attack(model, x, y) when an attack is given; a
    progress bar named `progress` when given."""
    was_training = model.training
    model.eval()
    out = []
    for start in tqdm(range(0, len(split), batch_size), desc=progress, disable=progress is None, leave=False, unit="batch"):
        x, y = split.batch(torch.arange(start, min(start + batch_size, len(split))), device)
        if attack is not None:
            x = attack(model, x, y)
        with torch.no_grad():
            out.append((model(x).argmax(1) == y).cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool)


def pct(mask: torch.Tensor) -> float:
    """Percentage of True in `mask`, from exact counts (a float32 mean would record 30.000001 for 3 of 10)."""
    return 100.0 * int(mask.sum()) / len(mask) if len(mask) else float("nan")


def accuracy(model: nn.Module, split: Split, device: torch.device, batch_size: int, attack: Attack | None = None) -> float:
    """Percentage of `split` classified correctly (under `attack` if given)."""
    return pct(correct_mask(model, split, device, batch_size, attack))
