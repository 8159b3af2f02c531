"""Attacks as small pure functions of (model, x, y, params) -> x_adv in [0,1]; the caller chooses the model's mode.

Inputs are in [0,1], eps in pixel units. Gradients are taken of the summed loss, so a sample's step does not depend
on the batch it is in. The step arithmetic (step, clamp delta, clamp image) matches torchattacks exactly.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def ce_sum(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y, reduction="sum")


def _input_grad(model: nn.Module, x: torch.Tensor, target: torch.Tensor, loss_fn: LossFn) -> torch.Tensor:
    """d loss_fn(model(x), target) / dx without touching parameter gradients."""
    x = x.detach().requires_grad_(True)
    loss = loss_fn(model(x), target)
    (grad,) = torch.autograd.grad(loss, x)
    return grad


def _project_linf(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    return (x + (x_adv - x).clamp(-eps, eps)).clamp(0, 1)


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float | None = None,
         random_start: bool = False, loss_fn: LossFn = ce_sum) -> torch.Tensor:
    """One signed-gradient step of size alpha (default eps); with random_start, FGSM-RS (Wong et al. 2020)."""
    alpha = eps if alpha is None else alpha
    start = x
    if random_start:
        start = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
    x_adv = start + alpha * _input_grad(model, start, y, loss_fn).sign()
    return _project_linf(x_adv, x, eps).detach()


def pgd_linf(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float, steps: int,
             random_start: bool = True, loss_fn: LossFn = ce_sum) -> torch.Tensor:
    """l_inf PGD (Madry et al.): optional uniform start in the eps-box, `steps` signed steps, projection."""
    x_adv = x.detach()
    if random_start:
        x_adv = (x_adv + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
    for _ in range(steps):
        x_adv = _project_linf(x_adv + alpha * _input_grad(model, x_adv, y, loss_fn).sign(), x, eps).detach()
    return x_adv


def _per_sample_norm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.dim() - 1)))


def pgd_l2(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float, steps: int,
           random_start: bool = True, loss_fn: LossFn = ce_sum) -> torch.Tensor:
    """l_2 PGD: normalised-gradient steps, projection onto the l_2 ball of radius eps and onto [0,1]."""
    tiny = 1e-10
    x_adv = x.detach()
    if random_start:
        delta = torch.randn_like(x)
        radius = torch.rand(len(x), device=x.device).view(-1, *([1] * (x.dim() - 1)))
        x_adv = (x + delta / (_per_sample_norm(delta) + tiny) * radius * eps).clamp(0, 1)
    for _ in range(steps):
        grad = _input_grad(model, x_adv, y, loss_fn)
        x_adv = x_adv + alpha * grad / (_per_sample_norm(grad) + tiny)
        delta = x_adv - x
        delta = delta * torch.clamp(eps / (_per_sample_norm(delta) + tiny), max=1.0)
        x_adv = (x + delta).clamp(0, 1).detach()
    return x_adv


def kl_sum(logits_adv: torch.Tensor, p_clean: torch.Tensor) -> torch.Tensor:
    """sum_i KL(p_clean_i || softmax(logits_adv_i)), the TRADES inner objective."""
    return F.kl_div(F.log_softmax(logits_adv, dim=1), p_clean, reduction="sum")


def trades_kl(model: nn.Module, x: torch.Tensor, eps: float, alpha: float, steps: int, noise: float = 0.001) -> torch.Tensor:
    """TRADES attack: from x + noise*N(0,I), signed steps maximising KL(f(x) || f(x')) inside the l_inf eps-box."""
    with torch.no_grad():
        p_clean = F.softmax(model(x), dim=1)
    x_adv = (x + noise * torch.randn_like(x)).detach()
    for _ in range(steps):
        x_adv = _project_linf(x_adv + alpha * _input_grad(model, x_adv, p_clean, kl_sum).sign(), x, eps).detach()
    return x_adv
