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

from ..data import Split
from ..models import Classifier
from ..objectives import Objective
from ..timing import PhaseTimer
from .rows import FactoredGradients


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
                   x_adv: torch.Tensor | None, bias_only: bool = False) -> torch.Tensor:
    """Per-sample gradients (N, C [+ C*D]) of objective.head_loss w.r.t. the head's bias [and weight]."""
    rows = head_gradient_rows(model, objective, x, y, x_adv)
    return rows.bias() if bias_only else rows.dense()


def selection_gradients(model: Classifier, objective: Objective, split: Split, rows: torch.Tensor, device: torch.device,
                        batch_size: int, timer: PhaseTimer) -> FactoredGradients:
    """Gradients for `rows` of `split`, attacked by the objective's own attack with the current model (eval mode),
    on the un-augmented images, in chunks of `batch_size`; kept factored, so memory is n (C + D + 1) per term."""
    was_training = model.training
    model.eval()
    out = []
    for chunk in rows.split(batch_size):
        x, y = split.batch(chunk, device)
        with timer("selection_attack"):
            x_adv = objective.perturb(model, x, y) if objective.uses_adv else None
        with timer("selection_gradients"):
            out.append(head_gradient_rows(model, objective, x, y, x_adv).to())
    model.train(was_training)
    return FactoredGradients.cat(out)
