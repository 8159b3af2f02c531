"""The coreset zoo: every registered selector keeps the exact budget and class shares, is deterministic per seed and
gives valid weights, clean and adversarial; planted cases for EasyCore, k-center, the submodular greedies and
forgetting events; static vs dynamic selection, and score-based selectors re-ranking the current model (source=run);
guards against the DeepCore quirks (herding's argmax, Glister's frozen validation gradient, Uncertainty's global path,
Moderate-DS's median)."""
from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn as nn

from acs_core.config import ConfigError, RunConfig
from acs_core.data import DATASETS, DataBundle, DataSpec, Split, load_synthetic, stratified_indices
from acs_core import train
from acs_core.models import Classifier, build_model
from acs_core.objectives import build_objective
from acs_core.proxy import compute_scores
from acs_core.schedule import Schedule
from acs_core.selection import SELECTORS, SelectionContext, build_selector
from acs_core.selection.algorithms import kernels
from acs_core.selection.algorithms.herding import herding
from acs_core.selection.algorithms.kcenter import kcenter_greedy
from acs_core.selection.algorithms.kernels import cosine_kernel
from acs_core.selection.algorithms.submodular import graph_cut_greedy, log_det_greedy
from acs_core.selection.algorithms.taylor import glister_greedy
from acs_core.selection.budgets import class_budgets
from acs_core.selection.selectors import glister
from acs_core.selection.selectors.facility_location import FacilityLocation
from acs_core.selection.selectors.moderate_ds import median
from acs_core.selection.statistics import forgetting_counts, presentation_stats
from acs_core.timing import PhaseTimer
from oracles import facility_location_value, graph_cut_value, log_det_value

CPU = torch.device("cpu")
FAST = {"deepfool": {"max_iter": 5}}  # DeepFool converges in 2-4 steps here; the cap only bounds the test's cost


@pytest.fixture(scope="module")
def zoo():
    """A small CNN trained briefly on synthetic images; 100 candidates (10 per class), 30 validation images, and
    proxy scores of the candidates (2 inits x 2 epochs, clean and PGD-2 views)."""
    train, _ = load_synthetic(None, False)
    spec = DATASETS.get("synthetic")
    rows = stratified_indices(train.y[:1000], 130, torch.Generator().manual_seed(0))
    candidates, val = train.subset(rows[:100]), train.subset(rows[100:])
    torch.manual_seed(0)
    model = build_model("small_cnn", 1, 10, spec.mean, spec.std)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for batch in (torch.arange(1000, 2000)[torch.randperm(1000)]).split(100):
        x, y = train.batch(batch, CPU)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    cfg = RunConfig(dataset="synthetic", objective="pgd_linf", attack_steps=2, proxy_epochs=2, proxy_inits=2, batch_size=50, quiet=True)
    objective = build_objective(cfg, spec)
    scores = compute_scores(cfg, DataBundle("synthetic", spec, candidates, val, val), objective, CPU)
    return model.eval(), objective, candidates, val, scores


def _ctx(zoo, fraction: float = 0.3, seed: int = 0) -> SelectionContext:
    model, objective, candidates, val, scores = zoo
    return SelectionContext(model, objective, candidates, round(fraction * len(candidates)), fraction, 10,
                            torch.Generator().manual_seed(seed), CPU, 50, PhaseTimer(CPU), 0, val, scores, lr=0.05)


def _cases() -> list[tuple[str, dict]]:
    """Every registered selector (but `full`), class-balanced and global, each model-based one at the view that is not
its default, and each score-based one on the current model (source=run)."""
    cases = []
    for name in SELECTORS.names():
        if name == "full":
            continue
        fields = {f.name: f.default for f in dataclasses.fields(SELECTORS.get(name))}
        for balanced in (True, False):
            cases.append((name, {"class_balanced": balanced, **FAST.get(name, {})}))
        if "view" in fields:
            cases.append((name, {"view": "clean" if fields["view"] == "adversarial" else "adversarial", **FAST.get(name, {})}))
        if "source" in fields and name != "forgetting":  # source=run: the statistic of the current model
            cases += [(name, {"source": "run"}), (name, {"source": "run", "view": "adversarial"})]
    return cases


@pytest.mark.parametrize("name, opts", _cases(), ids=lambda v: v if isinstance(v, str) else ",".join(f"{k}={x}" for k, x in v.items()))
def test_budget_balance_determinism_weights(zoo, name, opts):
    ctx = _ctx(zoo)
    torch.manual_seed(0)
    a = build_selector(name, opts).select(ctx)
    assert len(a.indices) == ctx.budget == 30 and len(torch.unique(a.indices)) == 30
    assert a.indices.min() >= 0 and a.indices.max() < len(ctx.candidates)
    assert len(a.weights) == 30 and bool((a.weights > 0).all()) and bool(torch.isfinite(a.weights).all())
    if opts.get("class_balanced", True):
        expected = class_budgets(ctx.candidates.y, ctx.fraction, ctx.budget)
        assert torch.bincount(ctx.candidates.y[a.indices], minlength=10).tolist() == [expected[c] for c in range(10)]
    torch.manual_seed(0)
    b = build_selector(name, opts).select(_ctx(zoo))
    assert torch.equal(a.indices, b.indices) and torch.equal(a.weights, b.weights)


@pytest.mark.parametrize("name", ["easycore", "grand", "el2n", "forgetting", "uncertainty", "cal", "moderate_ds"])
def test_scores_pick_the_right_end(zoo, name):
    """Ranking selectors keep exactly the top (or bottom) of their own score, per class."""
    ctx = _ctx(zoo)
    selector = build_selector(name, {})
    score = selector.prepare(ctx)
    kept = torch.zeros(len(score), dtype=torch.bool)
    kept[selector.select(ctx).indices] = True
    for c in range(10):
        members = ctx.candidates.y == c
        s_in, s_out = score[members & kept], score[members & ~kept]
        if name == "moderate_ds":  # the band around the median distance: dropped ones lie on both sides
            assert s_out.min() <= s_in.min() and s_out.max() >= s_in.max()
        elif selector.keep_largest:
            assert s_in.min() >= s_out.max()
        else:
            assert s_in.max() <= s_out.min()


class _MLP(Classifier):
    """A 2-D two-class classifier for the planted EasyCore case."""

    def __init__(self) -> None:
        super().__init__(1, 2, (0.5,), (0.25,), feature_dim=32)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(2, 32), nn.ReLU())

    def body(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def test_easycore_keeps_points_far_from_the_boundary():
    """Uniform points in the unit square, label = x0 > 0.5: the 30% lowest-AIGN points lie far from x0 = 0.5."""
    n = 300
    pts = torch.rand(n, 2, generator=torch.Generator().manual_seed(0))
    y = (pts[:, 0] > 0.5).long()
    split = Split((pts * 255).round().to(torch.uint8).view(n, 1, 1, 2), y)
    spec = DataSpec(lambda root, download: (split, split), 2, (1, 1, 2), (0.5,), (0.25,), 0.05, 0.1, "none")
    cfg = RunConfig(dataset="toy", objective="vanilla", proxy_epochs=8, proxy_inits=1, proxy_lr=0.1, batch_size=32, quiet=True)
    objective = build_objective(cfg, spec)
    scores = compute_scores(cfg, DataBundle("toy", spec, split, split.subset(torch.arange(0)), split), objective, CPU, build=_MLP)
    assert scores.stats["clean_correct"][0, -1].float().mean() > 0.95  # the proxy learned the task
    ctx = SelectionContext(_MLP(), objective, split, 90, 0.3, 2, torch.Generator().manual_seed(0), CPU, 100, PhaseTimer(CPU), 0,
                           scores=scores)
    kept = torch.zeros(n, dtype=torch.bool)
    kept[build_selector("easycore", {}).select(ctx).indices] = True
    margin = (pts[:, 0] - 0.5).abs()
    assert margin[kept].min() > 0.15  # nothing near the boundary (random would keep ~27 points with margin < 0.15)
    assert margin[kept].mean() > margin[~kept].mean() + 0.1


def _coverage(points: torch.Tensor, centres: torch.Tensor) -> float:
    """max_i min_c ||p_i - p_c||: the radius the centres need to cover every point."""
    return float(torch.cdist(points, points[centres]).min(1).values.max())


def test_kcenter_covers_better_than_random():
    pts = torch.rand(300, 2, generator=torch.Generator().manual_seed(0))
    picks = kcenter_greedy(lambda j: (pts - pts[j]).norm(dim=1), 300, 20, torch.Generator().manual_seed(0))
    assert len(torch.unique(picks)) == 20
    g = torch.Generator().manual_seed(1)
    best_random = min(_coverage(pts, torch.randperm(300, generator=g)[:20]) for _ in range(50))
    assert _coverage(pts, picks) < 0.8 * best_random


def _brute_force_greedy(value, n: int, k: int) -> list[int]:
    """Plain greedy that evaluates the set function from scratch for every candidate (ties: lowest index)."""
    picks: list[int] = []
    for _ in range(k):
        gains = [(value(torch.tensor(picks + [e])), -e) for e in range(n) if e not in picks]
        picks.append(-max(gains)[1])
    return picks


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_submodular_greedy_equals_brute_force(seed):
    vectors = torch.randn(12, 5, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    kernel = cosine_kernel(vectors).double()
    k = 6
    for greedy, value in [
        (lambda: graph_cut_greedy(kernel, k, 1.0), lambda s: graph_cut_value(kernel, s, 1.0)),
        (lambda: graph_cut_greedy(kernel, k, 0.3), lambda s: graph_cut_value(kernel, s, 0.3)),
        (lambda: log_det_greedy(kernel, k, 1.0), lambda s: log_det_value(kernel, s, 1.0)),
        (lambda: log_det_greedy(kernel, k, 0.1), lambda s: log_det_value(kernel, s, 0.1)),
        (lambda: FacilityLocation().maximise(kernel, k)[0], lambda s: facility_location_value(kernel, s)),
    ]:
        picks = greedy().tolist()
        oracle = _brute_force_greedy(value, len(kernel), k)
        assert picks == oracle
        assert value(torch.tensor(picks)) == pytest.approx(value(torch.tensor(oracle)), rel=1e-12)


def test_forgetting_counts_hand_trace():
    correct = torch.tensor([  # epochs x samples
        [1, 0, 1, 0, 1, 0],
        [1, 1, 0, 0, 0, 0],
        [1, 0, 1, 0, 0, 1],
        [1, 1, 0, 0, 1, 1],
    ], dtype=torch.bool)
    # s0 never forgotten; s1 1->0 once; s2 twice; s3 never learned (inf); s4 once; s5 learned late, never forgotten
    assert forgetting_counts(correct).tolist() == [0.0, 1.0, 2.0, float("inf"), 1.0, 0.0]


def test_presentation_hook_matches_per_sample_autograd(tiny_model, batch):
    """aign_sq, el2n, grand and correct of one batch equal their definitions computed one sample at a time."""
    x, y = batch
    spec = DATASETS.get("synthetic")
    objective = build_objective(RunConfig(dataset="synthetic", objective="trades", attack_steps=2), spec)
    torch.manual_seed(0)
    stats = presentation_stats(tiny_model, objective, x, y, adversarial=True)
    torch.manual_seed(0)
    x_adv = objective.perturb(tiny_model, x, y)
    for i in range(len(x)):
        xi = x[i:i + 1].clone().requires_grad_(True)
        z = tiny_model(xi)
        (gx,) = torch.autograd.grad(nn.functional.cross_entropy(z, y[i:i + 1]), xi)
        assert stats["clean_aign_sq"][i].item() == pytest.approx(gx.pow(2).sum().item(), rel=1e-4)
        p = z.softmax(1)[0].detach()
        assert stats["clean_el2n"][i].item() == pytest.approx((p - nn.functional.one_hot(y[i], 10)).norm().item(), rel=1e-5)
        assert bool(stats["clean_correct"][i]) == (z.argmax(1).item() == y[i].item())
        # GraNd, adversarial: the TRADES loss of this sample differentiated w.r.t. the head's bias and weight
        tiny_model.zero_grad()
        loss = objective.head_loss(tiny_model(x[i:i + 1]), tiny_model(x_adv[i:i + 1]), y[i:i + 1]).sum()
        gb, gw = torch.autograd.grad(loss, [tiny_model.head.bias, tiny_model.head.weight])
        assert stats["adversarial_grand"][i].item() == pytest.approx(torch.cat([gb, gw.flatten()]).norm().item(), rel=1e-4)


def test_static_selects_once_dynamic_every_interval():
    static = Schedule(epochs=12, fraction=0.5, kappa=0.5, interval=2, coreset=True, static=True)
    dynamic = dataclasses.replace(static, static=False)
    assert [e for e in range(12) if static.selects(e)] == [6]
    assert [e for e in range(12) if dynamic.selects(e)] == [6, 8, 10]
    assert Schedule.from_config(RunConfig(selection="static", selector="random", epochs=12, kappa=0.5, fraction=0.5), True).static
    with pytest.raises(ConfigError, match="selection"):
        RunConfig.from_dict({"selection": "sometimes"})


def _statistic(model: Classifier, name: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """A score-based selector's statistic at `model` by its definition, computed on its own (one-channel images):
    ||grad_x CE|| (easycore), ||p - onehot|| (el2n), ||[dL/db, dL/dW]|| = ||p - onehot|| sqrt(1 + ||h||^2) (grand)."""
    x = x.clone().requires_grad_(True)
    z = model(x)
    if name == "easycore":
        (g,) = torch.autograd.grad(nn.functional.cross_entropy(z, y, reduction="sum"), x)
        return g.flatten(1).norm(dim=1)
    err = (z.softmax(1) - nn.functional.one_hot(y, z.shape[1])).detach().norm(dim=1)
    return err if name == "el2n" else err * (1 + model.features(x).detach().pow(2).sum(1)).sqrt()


@pytest.mark.parametrize("name", ["easycore", "grand", "el2n"])
def test_source_run_reranks_the_current_model_at_every_dynamic_selection(monkeypatch, tmp_path, name):
    """selection=dynamic, source=run: the coresets of epochs 2 and 3 differ, each is exactly the per-class ranking of the
    statistic computed directly on the model of that epoch, and no proxy is trained."""
    seen = []

    def spy(exp, timer, epoch, previous, selector=None):
        model = copy.deepcopy(exp.model).eval()
        coreset = select(exp, timer, epoch, previous, selector)
        seen.append((model, exp.data.train, coreset))
        return coreset

    select = train.select_coreset
    monkeypatch.setattr(train, "select_coreset", spy)
    cfg = RunConfig(dataset="synthetic", train_size=200, val_size=100, test_size=100, objective="pgd_linf", attack_steps=2,
                    eval_steps=2, batch_size=50, selector=name, selector_opts={"source": "run"}, fraction=0.3, epochs=4,
                    kappa=0.5, select_every=1, selection="dynamic", quiet=True, out=str(tmp_path / "run"))
    record = train.run(cfg)
    assert [s["epoch"] for s in record["selections"]] == [2, 3]
    for entry in record["selections"]:
        assert entry["scores_source"] == "run" and "selection_gradients" in entry["seconds"]
        assert "selection_proxy" not in entry["seconds"]
    picked = []
    for model, split, coreset in seen:
        x, y = split.batch(torch.arange(len(split)), CPU)
        score = _statistic(model, name, x, y)
        expected = [torch.nonzero(y == c).flatten()[torch.sort(score[y == c], descending=name != "easycore").indices[:k]]
                    for c, k in class_budgets(y, 0.3, 60).items()]
        assert sorted(coreset.indices.tolist()) == sorted(torch.cat(expected).tolist())
        picked.append(set(coreset.indices.tolist()))
    assert picked[0] != picked[1]


def test_source_options():
    """source=run never asks for proxy scores; forgetting (no presentation history) and a proxy epoch refuse it."""
    assert build_selector("easycore", {}).uses_scores and not build_selector("easycore", {"source": "run"}).uses_scores
    with pytest.raises(ConfigError, match=r"selector.source: .*use source=proxy") as err:
        build_selector("forgetting", {"source": "run"})
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="selector.epoch: .*source=run"):
        build_selector("grand", {"source": "run", "epoch": 1})
    with pytest.raises(ConfigError, match="selector.source"):
        build_selector("el2n", {"source": "model"})


@pytest.mark.parametrize("name, opts, field", [
    ("uncertainty", {"score": "doubt"}, "selector.score"), ("moderate_ds", {"centre": "mode"}, "selector.centre"),
    ("kcenter", {"view": "sideways"}, "selector.view"), ("cal", {"k": 0}, "selector.k"), ("graphcut", {"space": "pixels"}, "selector.space"),
])
def test_bad_options_name_the_field(name, opts, field):
    with pytest.raises(ConfigError, match=field):
        build_selector(name, opts)


def test_proxy_selectors_without_scores_and_glister_without_validation(zoo):
    with pytest.raises(ConfigError, match="scores"):
        build_selector("easycore", {}).select(dataclasses.replace(_ctx(zoo), scores=None))
    with pytest.raises(ConfigError, match="val_size"):
        build_selector("glister", {}).select(dataclasses.replace(_ctx(zoo), validation=None))
    with pytest.raises(ConfigError, match="selector.epoch"):
        build_selector("grand", {"epoch": 9}).select(_ctx(zoo))


def test_kernel_size_guard_names_class_balanced(monkeypatch):
    monkeypatch.setattr(kernels, "MAX_KERNEL_ENTRIES", 99)
    with pytest.raises(ConfigError, match="class_balanced"):
        cosine_kernel(torch.randn(10, 3))


def test_every_zoo_combination_is_listed():
    """The issue's list of selectors is registered (one file each)."""
    wanted = {"easycore", "random", "grand", "el2n", "glister", "cal", "contextual_diversity", "graphcut", "moderate_ds",
              "kcenter", "herding", "forgetting", "uncertainty", "deepfool", "facility_location", "log_determinant"}
    assert wanted <= set(SELECTORS.names())
    assert {n for n in SELECTORS.names() if build_selector(n, {}).uses_scores} == {"easycore", "grand", "el2n", "forgetting"}


def test_herding_takes_the_argmin():
    """A cluster and a few far outliers: herding's chosen mean lies closer to the group mean than that of DeepCore's
    argmax rule and than every one of 50 random subsets; its first pick is the point nearest the mean."""
    g = torch.Generator().manual_seed(0)
    pts = torch.cat([torch.randn(60, 2, generator=g), 6.0 + 0.3 * torch.randn(5, 2, generator=g)]).double()
    k, mu = 8, pts.mean(0)
    gap = lambda rows: float((pts[rows].mean(0) - mu).norm())  # noqa: E731
    farthest: list[int] = []  # DeepCore: argmax of the same distance
    for t in range(k):
        d = (mu - (pts[farthest].sum(0) + pts) / (t + 1)).norm(dim=1)
        d[farthest] = -1.0
        farthest.append(int(d.argmax()))
    picks = herding(pts, k)
    assert int(picks[0]) == int((pts - mu).norm(dim=1).argmin())
    assert gap(picks) < gap(torch.tensor(farthest))
    assert gap(picks) < min(gap(torch.randperm(65, generator=g)[:k]) for _ in range(50))


def test_glister_recomputes_the_validation_gradient_after_every_pick(zoo, monkeypatch):
    """Validation loss 0.5 ||theta - target||^2 on a 4-parameter head: the first pick overshoots the first coordinate,
    so the updated gradient prefers the complementary candidate where DeepCore's frozen one takes the redundant one;
    every call sees the head moved by the previous picks. In the selector, one validation gradient per pick at a
    moving head."""
    target = torch.tensor([-1.0, -1.0, 0.0, 0.0])
    grads = torch.tensor([[1.0, 0, 0, 0], [0.95, 0, 0, 0], [0, 0.9, 0, 0]])
    head = nn.Linear(1, 2)
    nn.init.zeros_(head.weight), nn.init.zeros_(head.bias)
    heads: list[torch.Tensor] = []

    def val_gradient(h: nn.Linear) -> torch.Tensor:
        theta = torch.cat([h.bias, h.weight.flatten()]).detach()
        heads.append(theta)
        return theta - target

    picks = glister_greedy(grads, 2, val_gradient, head, eta=1.0).tolist()
    assert picks == [0, 2]
    assert glister_greedy(grads, 2, lambda h: -target, head, eta=1.0).tolist() == [0, 1]  # frozen: the DeepCore quirk
    assert [t.tolist() for t in heads] == [[0.0] * 4, (-grads[0]).tolist()] and not head.bias.any()

    biases: list[torch.Tensor] = []
    real = glister.head_gradients
    monkeypatch.setattr(glister, "head_gradients", lambda m, *a: biases.append(m.head.bias.detach().clone()) or real(m, *a))
    ctx = _ctx(zoo)
    build_selector("glister", {}).select(ctx)
    assert len(biases) == ctx.budget  # one validation gradient per pick (only validation rows go through glister's)
    first = biases[0]
    assert torch.equal(first, zoo[0].head.bias) and not all(torch.equal(b, first) for b in biases[1:3])


@pytest.mark.parametrize("score", ["least_confidence", "entropy", "margin"])
def test_uncertainty_global_path_keeps_the_most_uncertain(zoo, score):
    """class_balanced=false: every kept sample is at least as uncertain as every dropped one (DeepCore keeps the least)."""
    ctx = _ctx(zoo)
    kept = torch.zeros(len(ctx.candidates), dtype=torch.bool)
    kept[build_selector("uncertainty", {"score": score, "class_balanced": False}).select(ctx).indices] = True
    with torch.no_grad():
        p = zoo[0](ctx.candidates.batch(torch.arange(len(ctx.candidates)), CPU)[0]).softmax(1)
    top2 = p.topk(2, dim=1).values
    uncertain = {"least_confidence": 1 - top2[:, 0], "entropy": -(p * p.log()).sum(1),
                 "margin": top2[:, 1] - top2[:, 0]}[score]  # margin: a smaller gap is more uncertain
    assert uncertain[kept].min() >= uncertain[~kept].max()


class _Identity(Classifier):
    """Features = the two pixel values of a 1x1x2 image (mean 0, std 1): the planted Moderate-DS case."""

    def __init__(self) -> None:
        super().__init__(1, 2, (0.0,), (1.0,), feature_dim=2)

    def body(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def test_moderate_ds_median_centre_and_band():
    """centre=median: distances to the per-dimension median (np.median, even class sizes average the middle pair),
    keeping the k distances centred on the median distance, per class; outliers pull the mean so centre=mean differs."""
    g = torch.Generator().manual_seed(0)
    n_c, k = 20, 10
    pts = torch.cat([torch.cat([0.2 + 0.1 * torch.rand(14, 2, generator=g), 0.8 + 0.2 * torch.rand(6, 2, generator=g)])
                     for _ in range(2)])
    y = torch.arange(2).repeat_interleave(n_c)
    split = Split((pts * 255).round().to(torch.uint8).view(-1, 1, 1, 2), y)
    ctx = SelectionContext(_Identity().eval(), build_objective(RunConfig(objective="vanilla"), DATASETS.get("synthetic")), split,
                           2 * k, 0.5, 2, torch.Generator().manual_seed(0), CPU, 16, PhaseTimer(CPU), 0)
    feats = split.x.view(-1, 2).double().numpy() / 255
    expected = []
    for c in range(2):
        rows = np.flatnonzero(y.numpy() == c)
        dist = np.linalg.norm(feats[rows] - np.median(feats[rows], axis=0), axis=1)
        band = rows[np.argsort(dist, kind="stable")[(n_c - k) // 2:(n_c - k) // 2 + k]]
        expected += band.tolist()
        inside, outside = dist[np.isin(rows, band)], dist[~np.isin(rows, band)]
        assert (outside < inside.min()).sum() == (outside > inside.max()).sum() == (n_c - k) // 2  # the band around the median
    chosen = build_selector("moderate_ds", {"centre": "median"}).select(ctx).indices
    assert sorted(chosen.tolist()) == sorted(expected)
    assert sorted(build_selector("moderate_ds", {"centre": "mean"}).select(ctx).indices.tolist()) != sorted(expected)
    m = torch.rand(6, 3, generator=g, dtype=torch.float64)
    assert np.allclose(median(m).numpy(), np.median(m.numpy(), axis=0))
