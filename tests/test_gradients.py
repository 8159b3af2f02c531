"""The closed-form last-layer gradient equals autograd's, for CE at adversarial points and for TRADES."""
from __future__ import annotations

import pytest
import torch

from acs_core.config import RunConfig
from acs_core.data import DATASETS, load_synthetic
from acs_core.objectives import build_objective
from acs_core.selection.gradients import head_gradient_rows, head_gradients
from acs_core.selection.views import outputs_at_view
from acs_core.timing import PhaseTimer


def _autograd_head_grads(model, objective, x, y, x_adv) -> torch.Tensor:
    """Reference: per-sample full autograd of the training loss w.r.t. head.bias and head.weight."""
    rows = []
    for i in range(len(y)):
        loss, _ = objective.loss(model, x[i:i + 1], y[i:i + 1], x_adv[i:i + 1])
        gb, gw = torch.autograd.grad(loss.sum(), [model.head.bias, model.head.weight])
        rows.append(torch.cat([gb, gw.flatten()]))
    return torch.stack(rows)


@pytest.mark.parametrize("name", ["pgd_linf", "trades", "vanilla", "pgd_l2"])
def test_closed_form_equals_autograd(tiny_model, batch, name):
    x, y = batch
    objective = build_objective(RunConfig(objective=name, attack_steps=3, beta=6.0), DATASETS.get("synthetic"))
    x_adv = objective.perturb(tiny_model, x, y)
    ours = head_gradients(tiny_model, objective, x, y, x_adv if objective.uses_adv else None)
    ref = _autograd_head_grads(tiny_model, objective, x, y, x_adv)
    assert ours.shape == (len(y), 10 + 10 * tiny_model.feature_dim)
    assert torch.allclose(ours, ref, atol=1e-5, rtol=1e-4)
    bias = head_gradient_rows(tiny_model, objective, x, y, x_adv if objective.uses_adv else None).bias()
    assert torch.allclose(bias, ours[:, :10])


def test_trades_beta_applied_once(tiny_model, batch):
    """The KL part of the TRADES gradient scales linearly in beta (not beta^2 as in the reference code)."""
    x, y = batch
    spec = DATASETS.get("synthetic")
    x_adv = (x + 0.05).clamp(0, 1)
    g = {b: head_gradients(tiny_model, build_objective(RunConfig(objective="trades", beta=b), spec), x, y, x_adv)
         for b in (0.0, 1.0, 3.0)}
    assert torch.allclose(g[3.0] - g[0.0], 3 * (g[1.0] - g[0.0]), atol=1e-5)


def test_chunked_extraction_matches_one_pass(tiny_model):
    """The views' chunked pass (adversarial view, 6 chunks) gives head_gradients' rows of one pass over all rows."""
    train, _ = load_synthetic(None, False)
    objective = build_objective(RunConfig(objective="fgsm_rs", eps=0.0), DATASETS.get("synthetic"))  # x_adv = x
    cpu = torch.device("cpu")
    timer = PhaseTimer(cpu)
    out = outputs_at_view(tiny_model, objective, train.subset(torch.arange(40)), "adversarial", cpu, 7, timer, gradients=True)
    x, y = train.batch(torch.arange(40), cpu)
    assert out.gradients is not None
    dense = out.gradients.dense()  # selection keeps the rows factored; materialised, they are head_gradients' rows
    assert dense.shape == (40, 10 + 10 * tiny_model.feature_dim)
    assert torch.allclose(dense, head_gradients(tiny_model, objective, x, y, x), atol=1e-6)
    assert {"selection_attack", "selection_features", "selection_gradients"} <= set(timer.flush())
