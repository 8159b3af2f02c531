"""Attacks stay in the eps-ball and [0,1], raise the loss, and equal torchattacks' outputs exactly."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from acs_core import attacks

torchattacks = pytest.importorskip("torchattacks")


def _ce(model, x, y) -> float:
    with torch.no_grad():
        return F.cross_entropy(model(x), y).item()


@pytest.mark.parametrize("name", ["fgsm_rs", "pgd_linf", "trades"])
def test_linf_attacks_stay_in_ball_and_box(tiny_model, batch, name):
    x, y = batch
    eps = 8 / 255
    x_adv = {
        "fgsm_rs": lambda: attacks.fgsm(tiny_model, x, y, eps, 1.25 * eps, random_start=True),
        "pgd_linf": lambda: attacks.pgd_linf(tiny_model, x, y, eps, eps / 4, 10),
        "trades": lambda: attacks.trades_kl(tiny_model, x, eps, 0.007, 10),
    }[name]()
    assert (x_adv - x).abs().max() <= eps + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert not x_adv.requires_grad


def test_l2_attack_stays_in_ball_and_box(tiny_model, batch):
    x, y = batch
    x_adv = attacks.pgd_l2(tiny_model, x, y, eps=0.5, alpha=0.125, steps=10)
    assert (x_adv - x).flatten(1).norm(dim=1).max() <= 0.5 + 1e-5
    assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_pgd_raises_the_loss(trained_model):
    model, x, y = trained_model
    clean = _ce(model, x, y)
    for x_adv in (attacks.pgd_linf(model, x, y, 0.1, 0.025, 10), attacks.pgd_l2(model, x, y, 1.0, 0.25, 10)):
        assert _ce(model, x_adv, y) > clean + 0.1


def test_fgsm_equals_torchattacks(tiny_model, batch):
    x, y = batch
    ours = attacks.fgsm(tiny_model, x, y, eps=8 / 255)
    theirs = torchattacks.FGSM(tiny_model, eps=8 / 255)(x, y)
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("steps", [1, 7])
def test_pgd_without_random_start_equals_torchattacks(tiny_model, batch, steps):
    x, y = batch
    ours = attacks.pgd_linf(tiny_model, x, y, eps=8 / 255, alpha=2 / 255, steps=steps, random_start=False)
    theirs = torchattacks.PGD(tiny_model, eps=8 / 255, alpha=2 / 255, steps=steps, random_start=False)(x, y)
    assert torch.equal(ours, theirs)


def test_attacks_leave_parameter_gradients_alone(tiny_model, batch):
    x, y = batch
    attacks.pgd_linf(tiny_model, x, y, 8 / 255, 2 / 255, 3)
    assert all(p.grad is None for p in tiny_model.parameters())
