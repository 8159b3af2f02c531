"""GLISTER's greedy: maximise the first-order decrease of the validation loss after one gradient step on the chosen
set, moving the head after every pick so the validation gradient is always taken where the step has led."""
from __future__ import annotations

import copy
from typing import Callable

import torch


def glister_greedy(grads: torch.Tensor, k: int, val_gradient: Callable[[torch.nn.Linear], torch.Tensor],
                   head: torch.nn.Linear, eta: float) -> torch.Tensor:
    """k greedy picks maximising g_i . val_gradient(head_S); head_S = head - eta * sum of the picks' gradients."""
    head = copy.deepcopy(head)
    c = head.bias.shape[0]
    taken = torch.zeros(len(grads), dtype=torch.bool, device=grads.device)
    picks = []
    for _ in range(k):
        gains = (grads @ val_gradient(head)).masked_fill(taken, -float("inf"))
        j = int(torch.argmax(gains))
        picks.append(j)
        taken[j] = True
        with torch.no_grad():
            head.bias -= eta * grads[j, :c]
            head.weight -= eta * grads[j, c:].view_as(head.weight)
    return torch.tensor(picks)
