"""Per-sample statistics of a model at clean and adversarial points: what the proxy records at every presentation
(`presentation_stats`) and what a `source=run` selector ranks at the run's current model (`model_stats`).

    aign_sq  per input channel, ||grad_x CE(f(x), y)||^2 (x in [0,1] pixels; the model normalises inside)
    el2n     ||softmax(f(x)) - onehot(y)||_2
    grand    ||last-layer gradient of the view's loss|| (gradients.head_gradients: bias and weight)
    correct  argmax f(x) == y (the forgetting events are its 1 -> 0 transitions: `forgetting_counts`)

Also the DeepFool distance to the decision boundary, the per-sample statistic of `deepfool`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data import Split
from ..models import Classifier
from ..objectives import Objective
from ..timing import PhaseTimer
from .gradients import OnFeatures, head_gradients
from .views import view_chunks, view_objective


def point_stats(model: Classifier, objective: Objective, x: torch.Tensor, y: torch.Tensor,
                x_adv: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """The statistics at x (view clean) and, when given, at the adversarial points x_adv (model in eval mode)."""
    points = {"clean": x} if x_adv is None else {"clean": x, "adversarial": x_adv}
    out: dict[str, torch.Tensor] = {}
    feats: dict[str, torch.Tensor] = {}
    for view, p in points.items():
        p = p.detach().requires_grad_(True)
        h = model.features(p)
        z = model.head(h)
        (grad_x,) = torch.autograd.grad(F.cross_entropy(z, y, reduction="sum"), p)
        z = z.detach()
        out[f"{view}_aign_sq"] = grad_x.pow(2).flatten(2).sum(2)
        out[f"{view}_el2n"] = (F.softmax(z, dim=1) - F.one_hot(y, z.shape[1])).norm(dim=1)
        out[f"{view}_correct"] = z.argmax(1) == y
        feats[view] = h.detach()
    for view in points:
        grads = head_gradients(OnFeatures(model.head), view_objective(objective, view), feats["clean"], y,  # type: ignore[arg-type]
                               feats.get("adversarial"))
        out[f"{view}_grand"] = grads.norm(dim=1)
    return out


def presentation_stats(model: Classifier, objective: Objective, x: torch.Tensor, y: torch.Tensor,
                       adversarial: bool) -> dict[str, torch.Tensor]:
    """The proxy's per-presentation hook (model in eval mode): the statistics at x, and at x~ if adversarial."""
    return point_stats(model, objective, x, y, objective.adversarial(model, x, y).detach() if adversarial else None)


def model_stats(model: Classifier, objective: Objective, split: Split, view: str, device: torch.device, batch_size: int,
                timer: PhaseTimer) -> dict[str, torch.Tensor]:
    """The statistics of every row of `split` at `model` as it is now (eval mode, un-augmented, the view's points),
    shaped as one presentation of one init, (1, 1, n, ...): what a selector with source=run ranks."""
    parts = []
    for x, x_adv, y in view_chunks(model, objective, split, view, device, batch_size, timer):
        with timer("selection_gradients"):
            parts.append(point_stats(model, objective, x, y, x_adv))
    return {k: torch.cat([p[k] for p in parts]).cpu()[None, None] for k in parts[0]}


def forgetting_counts(correct: torch.Tensor) -> torch.Tensor:
    """Forgetting events per sample from correctness at successive presentations (epochs, n); inf if never learned."""
    correct = correct.bool()
    events = (correct[:-1] & ~correct[1:]).sum(0).float()
    return torch.where(correct.any(0), events, torch.tensor(float("inf")))


def deepfool_distance(model: Classifier, x: torch.Tensor, max_iter: int, overshoot: float) -> torch.Tensor:
    """||(1 + overshoot) r|| of multi-class l2 DeepFool from each x (eval mode); after max_iter, the distance so far."""
    with torch.no_grad():
        k0 = model(x).argmax(1)
    r_tot = torch.zeros_like(x)
    active = torch.arange(len(x), device=x.device)
    for _ in range(max_iter):
        xa = (x[active] + (1 + overshoot) * r_tot[active]).requires_grad_(True)
        z = model(xa)
        keep = z.argmax(1) == k0[active]
        if not keep.any():
            break
        grads = torch.stack([torch.autograd.grad(z[:, c].sum(), xa, retain_graph=c < z.shape[1] - 1)[0]
                             for c in range(z.shape[1])], dim=1)[keep]  # (b, C, ...)
        z, k, rows = z.detach()[keep], k0[active][keep], torch.arange(int(keep.sum()), device=x.device)
        w = grads - grads[rows, k][:, None]
        f = (z - z[rows, k][:, None]).abs()
        w_norm = w.flatten(2).norm(dim=2)
        ratio = f / (w_norm + 1e-8)
        ratio[rows, k] = float("inf")
        l = ratio.argmin(1)
        step = ((f[rows, l] + 1e-4) / (w_norm[rows, l] ** 2 + 1e-8)).view(-1, *[1] * (x.dim() - 1)) * w[rows, l]
        active = active[keep]
        r_tot[active] += step
    return ((1 + overshoot) * r_tot).flatten(1).norm(dim=1)
