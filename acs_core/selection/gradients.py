"""Closed-form last-layer gradients of the training objective, at the objective's own adversarial points.

For logits z = W h + b and a per-sample loss L(z_clean, z_adv, y), the gradient w.r.t. the last layer is
    dL/db = dL/dz_clean + dL/dz_adv,     dL/dW = dL/dz_clean (x) h_clean + dL/dz_adv (x) h_adv.
Only the C-dim logit gradients need autograd (cheap); no backward pass through the network. With the objective's
`head_loss` this gives, with no special cases: CE at x_adv for PGD/FGSM (softmax - onehot, outer h_adv), the
vanilla gradient at x, and for TRADES bias g_c + beta*(g_ct + g_at), weight g_c(x)h + beta*(g_ct(x)h + g_at(x)h~),
with beta applied once (the reference code applies it twice). Selection keeps them factored (`rows.FactoredGradients`:
one (dL/dz, [1, h]) pair per logit set), so n candidates cost n (C + D + 1) floats per term, not n C (D + 1).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..models import Classifier
from ..objectives import Objective
from .rows import FactoredGradients


class OnFeatures(nn.Module):
    """A model's head on precomputed penultimate features, so `head_gradients` runs without the network body."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def features(self, h: torch.Tensor) -> torch.Tensor:
        return h


def head_gradient_rows(model: Classifier, objective: Objective, x: torch.Tensor, y: torch.Tensor,
                       x_adv: torch.Tensor | None) -> FactoredGradients:
    """Per-sample gradients of objective.head_loss w.r.t. the head's bias and weight, kept factored: one
    (dL/dz, h) term per logit set the loss uses (clean, adversarial)."""
    with torch.no_grad():
        h_clean = model.features(x) if objective.uses_clean else None
        h_adv = model.features(x_adv) if objective.uses_adv and x_adv is not None else None
    logits = [model.head(h).detach().requires_grad_(True) if h is not None else None for h in (h_clean, h_adv)]
    loss = objective.head_loss(logits[0], logits[1], y).sum()
    used = [(z, h) for z, h in zip(logits, (h_clean, h_adv)) if z is not None]
    dz = torch.autograd.grad(loss, [z for z, _ in used])
    return FactoredGradients.of([(d.detach(), h.detach()) for d, (_, h) in zip(dz, used)])


def head_gradients(model: Classifier, objective: Objective, x: torch.Tensor, y: torch.Tensor,
                   x_adv: torch.Tensor | None) -> torch.Tensor:
    """Per-sample gradients (N, C + C*D) of objective.head_loss w.r.t. the head's bias and weight, materialised."""
    return head_gradient_rows(model, objective, x, y, x_adv).dense()
