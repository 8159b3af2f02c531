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
from acs_core.selection import SELECTORS, SelectionContext, build_selector
from acs_core.selection.algorithms.matching import matching_error
from acs_core.selection.budgets import class_budgets, random_subset
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
    ("craig", {}), ("gradmatch", {}), ("craig", {"class_balanced": False}), ("gradmatch", {"view": "clean"}),
    ("craig", {"gradient": "full"}), ("random", {}), ("random", {"class_balanced": False}),
])
def test_budget_weights_and_determinism(fmnist_setup, name, opts):
    ctx = _ctx(fmnist_setup, "pgd_linf", 0.3)
    torch.manual_seed(0)
    a = build_selector(name, opts).select(ctx)
    assert len(a.indices) == ctx.budget == 180 and len(torch.unique(a.indices)) == 180
    assert (a.weights > 0).all() and torch.isfinite(a.weights).all()
    if opts.get("class_balanced", True):
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
    assert core.info["size_rule"].startswith("whole batches of 10") and core.info["budget"] == ctx.budget


def test_per_batch_size_rule_is_whole_batches_within_a_batch_of_the_budget(fmnist_setup):
    """Label-agnostic batches of 32 of the 600 candidates (18 of 32, one of 24) at budget 180: ceil(180 / 32) = 6 whole
    batches, 192 rows (12 over, less than one batch), as the contract and the coreset's info state; the per-sample
    variant keeps the exact budget."""
    ctx = _ctx(fmnist_setup, "pgd_linf", 0.3)
    core = build_selector("gradmatch", {"granularity": "batch", "batch": 32, "class_balanced": False}).select(ctx)
    assert ctx.budget == 180 and abs(len(core.indices) - ctx.budget) < 32 and len(core.indices) in (6 * 32, 5 * 32 + 24)
    assert "size_rule" not in build_selector("gradmatch", {}).select(ctx).info


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


def test_one_budget_option_and_one_view_rule():
    """Every selector but `full` takes class_balanced (true by default); every one that reads the model takes `view`,
    whose default is clean except for the ACS methods (Adv. CRAIG, Adv. GradMatch); full and random read no model
    outputs and have view None."""
    for name in SELECTORS.names():
        selector = build_selector(name, {})
        defaults = {f.name: f.default for f in dataclasses.fields(selector)}
        assert name == "full" or defaults["class_balanced"] is True, name
        expected = None if name in ("full", "random") else "adversarial" if name in ("craig", "gradmatch") else "clean"
        assert selector.view == expected and defaults.get("view") == expected, name
    with pytest.raises(ConfigError, match="selector.per_class: not an option"):
        build_selector("craig", {"per_class": False})



@pytest.mark.parametrize("class_balanced", [True, False])
def test_matching_error_baseline_is_drawn_as_the_random_selector_draws(fmnist_setup, class_balanced):
    """The random set a selection's matching error is compared with is the `random` selector's own draw (same budget
    policy, the same generator state after the selection), scaled to the full sum; the coreset a reselection replaces
    gets its matching error at the current model."""
    ctx = _ctx(fmnist_setup, "pgd_linf", 0.3)
    selector = build_selector("craig", {"class_balanced": class_balanced})
    data = selector.prepare(ctx)
    first = selector.select(ctx)
    ctx.generator.manual_seed(7)
    state = ctx.generator.get_state()
    info = selector.info(data, first.indices, first.weights, dataclasses.replace(ctx, previous=first))
    ctx.generator.set_state(state)
    rows = random_subset(ctx.candidates.y, 0.3, 180, class_balanced, ctx.generator)
    n = len(ctx.candidates)
    assert info["random_matching_error"] == matching_error(data, rows, torch.full((180,), n / 180))
    if class_balanced:  # the class-balanced random set is what `random` trains on: 18 per class here
        assert torch.equal(torch.bincount(ctx.candidates.y[rows], minlength=10), torch.full((10,), 18))
    assert info["previous_matching_error"] == info["matching_error"]  # same model: the previous coreset is as good
    assert info["matching_error"] < info["random_matching_error"]


@pytest.mark.parametrize("name", ["craig", "gradmatch"])
def test_per_batch_label_agnostic_picks_whole_sequential_batches(fmnist_setup, name):
    """The reference's CRAIGPB / GradMatchPB: consecutive batches of the candidate order, across classes."""
    ctx = _ctx(fmnist_setup, "pgd_linf", 0.5)
    core = build_selector(name, {"granularity": "batch", "batch": 32, "class_balanced": False}).select(ctx)
    blocks = torch.unique(core.indices // 32)
    assert sorted(core.indices.tolist()) == [i for b in blocks.tolist() for i in range(32 * b, min(32 * b + 32, 600))]
    for b in blocks.tolist():  # one weight per batch
        assert len(torch.unique(core.weights[core.indices // 32 == b])) == 1
    assert len(torch.unique(ctx.candidates.y[core.indices[core.indices // 32 == blocks[0]]])) > 1  # label-agnostic
    shuffled = build_selector(name, {"granularity": "batch", "batch": 32, "class_balanced": False,
                                     "batch_order": "random"}).select(ctx)
    assert len(torch.unique(shuffled.indices // 32)) > len(blocks)  # a permutation's batches are not consecutive blocks


def test_gradmatch_lambda_reaches_the_solver(fmnist_setup, monkeypatch):
    import acs_core.selection.selectors.gradmatch as module

    seen = []
    solver = module.omp_nnls
    monkeypatch.setattr(module, "omp_nnls", lambda *a, **k: seen.append(k["lam"]) or solver(*a, **k))
    ctx = _ctx(fmnist_setup, "pgd_linf", 0.3)
    lam0 = build_selector("gradmatch", {"lam": 0.0, "granularity": "batch", "batch": 16, "class_balanced": False}).select(ctx)
    lam5 = build_selector("gradmatch", {"lam": 5.0, "granularity": "batch", "batch": 16, "class_balanced": False}).select(ctx)
    assert seen == [0.0, 5.0]
    assert not torch.equal(lam0.weights, lam5.weights)  # and it changes the fit


def test_cheaper_selection_attack(fmnist_setup):
    """selector.attack_steps=k: k attack steps (k forward + k backward passes per candidate) of the same total length."""
    ctx = _ctx(fmnist_setup, "pgd_linf", 0.3)  # training attack: 3 steps
    assert ctx.objective.with_steps(1).alpha == pytest.approx(3 * ctx.objective.alpha)
    passes = {}
    for steps in (None, 1):
        timer = PhaseTimer(CPU)
        timer.watch(ctx.model)
        opts = {} if steps is None else {"attack_steps": steps}
        build_selector("craig", opts).select(dataclasses.replace(ctx, timer=timer))
        passes[steps] = timer.passes["selection_attack"]
    ctx.model.pass_counter = None
    n = len(ctx.candidates)
    assert passes[None] == {"forward": 3 * n, "backward": 3 * n} and passes[1] == {"forward": n, "backward": n}
    with pytest.raises(ConfigError, match="selector.attack_steps"):
        build_selector("craig", {"attack_steps": 0})
