"""Objective losses match their formulas; the weighted loss reduces to the mean; train mode survives the attack."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from acs_core.config import RunConfig
from acs_core.data import DATASETS
from acs_core.objectives import OBJECTIVES, build_objective, weighted_mean


def test_trades_loss_equals_hand_formula(tiny_model, batch):
    x, y = batch
    obj = build_objective(RunConfig(objective="trades", beta=6.0), DATASETS.get("synthetic"))
    x_adv = (x + 0.05 * torch.sign(torch.randn_like(x))).clamp(0, 1)
    losses, _ = obj.loss(tiny_model, x, y, x_adv)
    z, z_adv = tiny_model(x), tiny_model(x_adv)
    p = z.softmax(1)
    kl_per_sample = (p * (p.log() - z_adv.log_softmax(1))).sum(1)
    by_hand = F.cross_entropy(z, y) + 6.0 * kl_per_sample.sum() / len(x)  # CE mean + beta * batchmean KL
    assert torch.allclose(losses.mean(), by_hand, atol=1e-5)


def test_trades_gradient_flows_through_clean_logits(tiny_model, batch):
    """f(x) is NOT detached inside the KL term: the KL part alone has a gradient through the clean pass."""
    x, y = batch
    obj = build_objective(RunConfig(objective="trades", beta=1.0), DATASETS.get("synthetic"))
    z = tiny_model(x).detach().requires_grad_(True)
    z_adv = tiny_model(x + 0.05).detach()
    kl_only = obj.head_loss(z, z_adv, y) - F.cross_entropy(z, y, reduction="none")
    (grad,) = torch.autograd.grad(kl_only.sum(), z)
    assert grad.abs().sum() > 0


def test_weighted_loss_with_unit_weights_is_the_mean(tiny_model, batch):
    x, y = batch
    obj = build_objective(RunConfig(objective="pgd_linf"), DATASETS.get("synthetic"))
    x_adv = obj.perturb(tiny_model, x, y)
    losses, _ = obj.loss(tiny_model, x, y, x_adv)
    assert torch.allclose(weighted_mean(losses, torch.ones(len(y))), F.cross_entropy(tiny_model(x_adv), y), atol=1e-6)
    w = torch.zeros(len(y))
    w[3] = 2.5
    assert torch.allclose(weighted_mean(losses, w), losses[3])


def test_objective_conventions():
    spec = DATASETS.get("fashion_mnist")
    fast = build_objective(RunConfig(objective="fgsm_rs"), spec)
    assert fast.eps == spec.eps_linf and abs(fast.alpha - 1.25 * fast.eps) < 1e-12
    l2 = build_objective(RunConfig(objective="pgd_l2", attack_steps=10), spec)
    assert l2.norm == "l2" and l2.eps == spec.eps_l2 and abs(l2.alpha - 2.5 * l2.eps / 10) < 1e-12
    cifar = build_objective(RunConfig(objective="trades"), DATASETS.get("cifar10"))
    assert abs(cifar.alpha - 0.007) < 2e-4 and cifar.beta == 6.0
    assert set(OBJECTIVES.names()) >= {"vanilla", "fgsm_rs", "pgd_linf", "pgd_l2", "trades"}


@pytest.mark.parametrize("objective", ["pgd_linf", "fgsm_rs"])
def test_chunked_attack_finds_the_whole_batch_points(tiny_model, batch, objective):
    """attack_chunk only splits the work: chunks of 5 (the last one short) reach the whole batch's points, in order
    (a uniform random start draws the same numbers in chunks; a Gaussian one, as TRADES', need not)."""
    x, y = batch
    tiny_model.eval()
    whole, chunked = (build_objective(RunConfig(objective=objective, attack_chunk=k), DATASETS.get("synthetic"))
                      for k in (0, 5))
    torch.manual_seed(3)
    expected = whole.adversarial(tiny_model, x, y)
    torch.manual_seed(3)
    got = chunked.adversarial(tiny_model, x, y)
    tiny_model.train()
    assert got.shape == expected.shape
    assert (got - expected).abs().le(1e-5).float().mean() > 0.999  # float rounding may differ by batch size

