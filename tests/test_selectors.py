"""Adv. CRAIG and Adv. GradMatch as selectors: exact budgets, class shares, determinism, and better gradient matching
than random on a real Fashion-MNIST model."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from acs_core.config import ConfigError, RunConfig
from acs_core.data import load_data, stratified_indices
from acs_core.models import build_model
from acs_core.objectives import build_objective
from acs_core.selection import SelectionContext, build_selector
from acs_core.selection.solvers import class_budgets
from acs_core.timing import PhaseTimer

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def fmnist_setup():
    """A small CNN trained one clean epoch on 2,000 real Fashion-MNIST images; 600 candidates to select from."""
    cfg = RunConfig(dataset="fashion_mnist", train_size=2600, val_size=100, test_size=100)
    data = load_data(cfg)
    torch.manual_seed(0)
    model = build_model("small_cnn", 1, 10, data.spec.mean, data.spec.std)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    chosen = stratified_indices(data.train.y, 600, torch.Generator().manual_seed(0))  # 60 per class
    rest = torch.ones(len(data.train), dtype=torch.bool)
    rest[chosen] = False
    train_rows = torch.nonzero(rest).flatten()
    model.train()
    for rows in train_rows[torch.randperm(len(train_rows))].split(64):
        x, y = data.train.batch(rows, CPU)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval(), data.train.subset(chosen), data.spec


def _ctx(setup, objective: str, fraction: float, seed: int = 0) -> SelectionContext:
    model, candidates, spec = setup
    obj = build_objective(RunConfig(objective=objective, attack_steps=3), spec)
    return SelectionContext(model, obj, candidates, round(fraction * len(candidates)), fraction, 10,
                            torch.Generator().manual_seed(seed), CPU, 200, PhaseTimer(CPU), epoch=0)


@pytest.mark.parametrize("name, opts", [
    ("craig", {}), ("gradmatch", {}), ("craig", {"per_class": False}), ("gradmatch", {"view": "clean"}),
    ("craig", {"gradient": "full"}), ("random", {}), ("random", {"class_balanced": False}),
])
def test_budget_weights_and_determinism(fmnist_setup, name, opts):
    ctx = _ctx(fmnist_setup, "pgd_linf", 0.3)
    torch.manual_seed(0)
    a = build_selector(name, opts).select(ctx)
    assert len(a.indices) == ctx.budget == 180 and len(torch.unique(a.indices)) == 180
    assert (a.weights > 0).all() and torch.isfinite(a.weights).all()
    if opts.get("per_class", True) and opts.get("class_balanced", True):
        counts = torch.bincount(ctx.candidates.y[a.indices], minlength=10)
        expected = class_budgets(ctx.candidates.y, 0.3, 180)
        assert counts.tolist() == [expected[c] for c in range(10)]
    torch.manual_seed(0)
    b = build_selector(name, opts).select(dataclasses.replace(ctx, generator=torch.Generator().manual_seed(0)))
    assert torch.equal(a.indices, b.indices) and torch.equal(a.weights, b.weights)


def test_craig_weights_are_cluster_sizes(fmnist_setup):
    ctx = _ctx(fmnist_setup, "pgd_linf", 0.2)
    core = build_selector("craig", {}).select(ctx)
    assert core.weights.sum().item() == len(ctx.candidates)  # every candidate is assigned to one medoid of its class


def test_per_batch_selects_whole_batches_with_shared_weights(fmnist_setup):
    ctx = _ctx(fmnist_setup, "pgd_linf", 0.5)
    core = build_selector("gradmatch", {"granularity": "batch", "batch": 10}).select(ctx)
    assert len(core.indices) == len(torch.unique(core.indices))
    # each class (60 candidates, budget 30) contributes 3 whole batches of 10
    assert torch.bincount(ctx.candidates.y[core.indices], minlength=10).tolist() == [30] * 10
    assert len(torch.unique(core.weights)) > 1  # different batches carry different weights: they matter in the loss


@pytest.mark.parametrize("objective", ["pgd_linf", "trades"])
@pytest.mark.parametrize("name", ["craig", "gradmatch"])
def test_adversarial_selection_matches_gradients_better_than_random(fmnist_setup, name, objective):
    core = build_selector(name, {}).select(_ctx(fmnist_setup, objective, 0.3))
    assert core.info["matching_error"] < core.info["random_matching_error"]


def test_bad_selector_options():
    with pytest.raises(ConfigError, match="selector.view"):
        build_selector("craig", {"view": "sideways"})
    with pytest.raises(ConfigError, match="selector.colour"):
        build_selector("gradmatch", {"colour": 1})
