"""The self perceptual distance, perceptual attacks (Laidlaw et al., "Perceptual Adversarial Robustness", ICLR 2021)
and non-l_p "unseen" attacks, as small pure functions of (model, x, y, params) -> x_adv in [0,1].

Self perceptual distance (the LPIPS form without learned weights, computed by the classifier itself, so nothing is
downloaded): every intermediate feature map of `model.feature_maps(x)` is divided at each position by its channel
norm and by sqrt(H*W), the maps are flattened and concatenated, and d(x, x') is the L2 distance of those vectors.
Each layer contributes at most sqrt(2) for ReLU features, so d <= sqrt(2 * layers).

Attacks (the caller puts the model in eval mode; gradients of summed losses, so a sample's step does not depend on
its batch):
- `fast_lpa`: Fast-LPA, the PAT training attack: ascend loss - lambda * relu(d - bound) along the normalised gradient,
  each step scaled by a finite-difference estimate of d's directional derivative so that it moves d by about `step`;
  step decays from bound to bound/10, lambda grows from lam/10 to lam; a soft bound (no projection).
- `lpa`: LPA, the Lagrangian attack with lambda raised x10 for samples still outside the bound, then projected back
  onto the bound by bisection.
- `ppgd`: perceptual PGD: first-order steps of perceptual length 2*bound/steps, d ~ (J^T J)^-1 grad of the loss by
  conjugate gradients with finite-difference Jacobian products, each followed by the bisection projection.
- `spatial_flow` (StAdv-like threat model: a per-pixel flow field bounded in l_inf, grid units where the image spans
  [-1, 1]) and `rotation_translation` (worst case over a grid of rotations and translations, Engstrom et al.).
"""
from __future__ import annotations

import itertools
import math
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attacks import LossFn, ce_sum
from .models import Classifier

TINY = 1e-10


def normalized_features(maps: list[torch.Tensor]) -> torch.Tensor:
    """(N, D) vector of channel-normalised maps scaled by 1/sqrt(H*W): the L2 distance of two is the perceptual one."""
    parts = []
    for f in maps:
        f = f.float()
        norm = torch.linalg.vector_norm(f, dim=1, keepdim=True) + TINY
        parts.append((f / (norm * math.sqrt(f.shape[2] * f.shape[3]))).flatten(1))
    return torch.cat(parts, dim=1)


def self_features(model: Classifier, x: torch.Tensor) -> torch.Tensor:
    """The normalised feature vector of x in the model's own maps (the self bound: no external network)."""
    return normalized_features(model.feature_maps(x))


def perceptual_distance(model: Classifier, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """Per-sample self perceptual distance (N,) between two batches of images in [0,1]."""
    return (self_features(model, x1) - self_features(model, x2)).norm(dim=1)


def margins(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample max_{j != y} z_j - z_y (N,): positive iff misclassified."""
    correct = logits.gather(1, y[:, None]).squeeze(1)
    return logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(1) - correct


def margin_sum(logits: torch.Tensor, y: torch.Tensor, kappa: float = 1.0) -> torch.Tensor:
    """sum_i min(margin_i, kappa): the loss of the PAT paper's PPGD and LPA evaluation attacks."""
    return margins(logits, y).clamp(max=kappa).sum()


def _per_sample(t: torch.Tensor) -> torch.Tensor:
    """A per-sample (N,) value reshaped to broadcast over images."""
    return t.view(-1, 1, 1, 1)


def _start(x: torch.Tensor) -> torch.Tensor:
    """The perceptual attacks' start: x + N(0, 0.01^2) noise, clamped to [0,1]."""
    return (x + 0.01 * torch.randn_like(x)).clamp(0, 1)


def _lagrangian_step(model: Classifier, x_adv: torch.Tensor, y: torch.Tensor, f_x: torch.Tensor, bound: float,
                     penalty: torch.Tensor | float, step: float, h: float, loss_fn: LossFn
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One Fast-LPA/LPA step: x_adv moved along the normalised gradient of loss - penalty * relu(d - bound) by
    step / (d's finite-difference slope along it), clamped to [0,1]; also d and the prediction before the step."""
    x_adv = x_adv.detach().requires_grad_(True)
    logits, maps = model.logits_and_maps(x_adv)
    f_adv = normalized_features(maps)
    dist = (f_adv - f_x).norm(dim=1)
    objective = loss_fn(logits, y) - (penalty * F.relu(dist - bound)).sum()
    (grad,) = torch.autograd.grad(objective, x_adv)
    direction = grad / (_per_sample(grad.flatten(1).norm(dim=1)) + 1e-8)
    with torch.no_grad():
        slope = (self_features(model, x_adv + h * direction) - f_adv).norm(dim=1) / h
        moved = (x_adv + direction * _per_sample(step / (slope + 1e-4))).clamp(0, 1)
    return moved.detach(), dist.detach(), logits.argmax(1).detach()


def unbounded_margin_sum(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """sum_i margin_i with no cap (kappa = inf): the loss of the PAT paper's Fast-LPA training attack."""
    return margins(logits, y).sum()


def fast_lpa(model: Classifier, x: torch.Tensor, y: torch.Tensor, bound: float, steps: int = 10, lam: float = 10.0,
             h: float = 0.1, loss_fn: LossFn = unbounded_margin_sum) -> torch.Tensor:
    """Fast-LPA (PAT's training attack): `steps` Lagrangian steps of perceptual length bound * 0.1^(t/steps) with
    penalty lam * 0.1^(1 - t/steps), ascending the uncapped margin loss as the reference does; the bound is soft
    (no projection: the growing penalty pulls samples back only where it outweighs the margin's gradient)."""
    with torch.no_grad():
        f_x = self_features(model, x)
    x_adv = _start(x)
    for t in range(steps):
        x_adv, _, _ = _lagrangian_step(model, x_adv, y, f_x, bound, lam * 0.1 ** (1 - t / steps),
                                       bound * 0.1 ** (t / steps), h, loss_fn)
    return x_adv


def project_bisection(model: Classifier, x: torch.Tensor, x_adv: torch.Tensor, bound: float, steps: int = 10,
                      f_x: torch.Tensor | None = None) -> torch.Tensor:
    """Back onto the perceptual ball: x + t * (x_adv - x) with the largest t in [0,1] that `steps` bisection steps
    find with d <= bound (t = 0 if none); samples already inside are returned unchanged."""
    with torch.no_grad():
        f_x = self_features(model, x) if f_x is None else f_x
        out = x_adv.clone()
        outside = torch.nonzero((self_features(model, x_adv) - f_x).norm(dim=1) > bound).flatten()
        if len(outside) == 0:
            return out
        x0, delta, f0 = x[outside], x_adv[outside] - x[outside], f_x[outside]
        lo, hi = torch.zeros(len(outside), device=x.device), torch.ones(len(outside), device=x.device)
        for _ in range(steps):
            mid = (lo + hi) / 2
            inside = (self_features(model, x0 + _per_sample(mid) * delta) - f0).norm(dim=1) <= bound
            lo, hi = torch.where(inside, mid, lo), torch.where(inside, hi, mid)
        out[outside] = x0 + _per_sample(lo) * delta
        return out


def lpa(model: Classifier, x: torch.Tensor, y: torch.Tensor, bound: float, steps: int = 40, binary_steps: int = 5,
        h: float = 0.1, loss_fn: LossFn = margin_sum, projection_steps: int = 10) -> torch.Tensor:
    """LPA: `binary_steps` rounds of `steps` Lagrangian steps (step decaying bound -> bound/10 each round) with a
    per-sample penalty starting at 0.01 and multiplied by 10 after a round that ends outside the bound; a sample
    stops at the first point that fools the model within the bound; the result is projected onto the bound."""
    with torch.no_grad():
        f_x = self_features(model, x)
    x_adv = _start(x)
    penalty = torch.full((len(x),), 0.01, device=x.device)
    dist = torch.zeros(len(x), device=x.device)
    live = torch.ones(len(x), dtype=torch.bool, device=x.device)
    for _ in range(binary_steps):
        for t in range(steps):
            idx = torch.nonzero(live).flatten()
            if len(idx) == 0:
                break
            moved, d, pred = _lagrangian_step(model, x_adv[idx], y[idx], f_x[idx], bound, penalty[idx],
                                              bound * 0.1 ** (t / steps), h, loss_fn)
            dist[idx] = d
            go_on = (pred == y[idx]) | (d > bound)  # a sample fooled within the bound keeps its point
            live[idx] = go_on
            x_adv[idx[go_on]] = moved[go_on]
        penalty = torch.where(dist > bound, 10 * penalty, penalty)
    return project_bisection(model, x, x_adv, bound, projection_steps, f_x)


def _first_order_step(model: Classifier, x_adv: torch.Tensor, y: torch.Tensor, length: float, cg_steps: int, h: float,
                      loss_fn: LossFn) -> torch.Tensor:
    """argmax of the linearised loss over ||J d|| <= length (J the Jacobian of the normalised features at x_adv):
    d ~ (J^T J)^-1 grad by `cg_steps` conjugate-gradient steps, J v by finite differences, J^T u by autograd."""
    x_adv = x_adv.detach().requires_grad_(True)
    logits, maps = model.logits_and_maps(x_adv)
    f_adv = normalized_features(maps)
    (grad,) = torch.autograd.grad(loss_fn(logits, y), x_adv, retain_graph=True)

    def jv(v: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return (self_features(model, x_adv + h * v) - f_adv) / h

    def jtj(v: torch.Tensor) -> torch.Tensor:
        return torch.autograd.grad(f_adv, x_adv, grad_outputs=jv(v), retain_graph=True)[0]

    def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a * b).flatten(1).sum(1)

    v, r = torch.zeros_like(grad), grad.clone()
    p, rr = r.clone(), dot(r, r)
    for _ in range(cg_steps):
        ap = jtj(p)
        a = rr / dot(p, ap).clamp_min(TINY)
        v, r = v + _per_sample(a) * p, r - _per_sample(a) * ap
        rr_next = dot(r, r)
        p, rr = r + _per_sample(rr_next / rr.clamp_min(TINY)) * p, rr_next
    scale = length / (jv(v).norm(dim=1) + TINY)
    scale = torch.where(grad.flatten(1).norm(dim=1) < 1e-4, torch.zeros_like(scale), scale)  # flat: stay
    return (x_adv + _per_sample(scale) * v).clamp(0, 1).detach()


def ppgd(model: Classifier, x: torch.Tensor, y: torch.Tensor, bound: float, steps: int = 40, cg_steps: int = 5,
         h: float = 1e-3, loss_fn: LossFn = margin_sum, projection_steps: int = 10) -> torch.Tensor:
    """Perceptual PGD: `steps` first-order steps of perceptual length 2 * bound / steps, each projected onto the
    bound by bisection."""
    with torch.no_grad():
        f_x = self_features(model, x)
    x_adv = _start(x)
    for _ in range(steps):
        x_adv = _first_order_step(model, x_adv, y, 2 * bound / steps, cg_steps, h, loss_fn)
        x_adv = project_bisection(model, x, x_adv, bound, projection_steps, f_x)
    return x_adv


def attack_correct_only(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                        attack: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """`attack` on the samples the model classifies correctly, the others unchanged (PAT's --only_attack_correct)."""
    with torch.no_grad():
        idx = torch.nonzero(model(x).argmax(1) == y).flatten()
    out = x.detach().clone()
    if len(idx):
        out[idx] = attack(model, x[idx], y[idx])
    return out


# ---------------------------------------------------------------- non-l_p ("unseen") attacks

def _identity_grid(x: torch.Tensor) -> torch.Tensor:
    """grid_sample's sampling grid (N, H, W, 2) that reproduces x."""
    theta = torch.eye(2, 3, device=x.device, dtype=x.dtype).expand(len(x), 2, 3)
    return F.affine_grid(theta, list(x.shape), align_corners=False)


def warp(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """x resampled bilinearly at identity + flow; flow (N, 2, H, W) in grid units (the image spans [-1, 1])."""
    grid = _identity_grid(x) + flow.permute(0, 2, 3, 1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def spatial_flow(model: nn.Module, x: torch.Tensor, y: torch.Tensor, bound: float = 0.05, steps: int = 20,
                 alpha: float | None = None, loss_fn: LossFn = ce_sum) -> torch.Tensor:
    """Spatial (flow) attack: PGD with signed steps (default bound/4) on a per-pixel flow field, uniform start in and
    projection onto the l_inf ball of radius `bound` in grid units (0.05: 0.7 pixels at 28x28)."""
    alpha = bound / 4 if alpha is None else alpha
    flow = torch.empty(len(x), 2, *x.shape[2:], device=x.device, dtype=x.dtype).uniform_(-bound, bound)
    for _ in range(steps):
        flow.requires_grad_(True)
        (grad,) = torch.autograd.grad(loss_fn(model(warp(x, flow)), y), flow)
        flow = (flow + alpha * grad.sign()).clamp(-bound, bound).detach()
    return warp(x, flow).detach()


def rotate_translate(x: torch.Tensor, angle_deg: float, shift_x: float, shift_y: float) -> torch.Tensor:
    """x rotated by `angle_deg` about its centre and shifted by fractions of its width/height, zero padding."""
    a = math.radians(angle_deg)
    theta = torch.tensor([[math.cos(a), -math.sin(a), -2 * shift_x], [math.sin(a), math.cos(a), -2 * shift_y]],
                         device=x.device, dtype=x.dtype).expand(len(x), 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _symmetric_grid(limit: float, k: int) -> list[float]:
    """k evenly spaced values in [-limit, limit] (0 alone for k = 1)."""
    return torch.linspace(-limit, limit, k).tolist() if k > 1 else [0.0]


def rotation_translation(model: nn.Module, x: torch.Tensor, y: torch.Tensor, max_angle: float = 30.0,
                         max_shift: float = 0.1, angles: int = 5, shifts: int = 3) -> torch.Tensor:
    """Worst case per sample (highest margin loss, so a fooling transform wins) over a grid of `angles` rotations in
    [-max_angle, max_angle] degrees x `shifts`^2 translations in [-max_shift, max_shift] of the image size
    (Engstrom et al.'s grid attack); odd grid sizes include the identity."""
    best, best_score = x.detach().clone(), torch.full((len(x),), float("-inf"), device=x.device)
    shift_grid = _symmetric_grid(max_shift, shifts)
    with torch.no_grad():
        for angle, sx, sy in itertools.product(_symmetric_grid(max_angle, angles), shift_grid, shift_grid):
            xt = rotate_translate(x, angle, sx, sy)
            score = margins(model(xt), y)
            better = score > best_score
            best[better], best_score = xt[better], torch.where(better, score, best_score)
    return best
