"""Perceptual adversarial training: the self perceptual distance, the perceptual and unseen attacks, the pat objective
with Adv. CRAIG, the perceptual evaluation suite, ResNet-50 and the imagefolder data set."""
from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from acs_core import perceptual as P
from acs_core.cli import main
from acs_core.config import ConfigError, RunConfig
from acs_core.data import DATASETS, FASHION_DIRS, DataMissingError, load_data, load_synthetic
from acs_core.evaluate import evaluate_model
from acs_core.models import MODELS, build_model
from acs_core.objectives import build_objective
from acs_core.selection.gradients import head_gradients
from acs_core.suites import PERCEPTUAL_UNSEEN, SUITES, Suite
from acs_core.train import run

BOUND = DATASETS.get("synthetic").eps_perceptual  # 1.0: the synthetic set's self bound


def _acc(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return 100.0 * (model(x).argmax(1) == y).float().mean().item()


@pytest.fixture(scope="module")
def model_xy(trained_model):
    """The clean-trained synthetic small CNN of conftest and 30 of its test images (all classified correctly)."""
    model, x, y = trained_model
    return model, x[:30], y[:30]


def test_normalized_features_are_channel_normalised_and_scaled():
    torch.manual_seed(0)
    f = torch.rand(2, 5, 3, 4) + 0.1
    v = P.normalized_features([f])
    assert torch.allclose(v.norm(dim=1), torch.ones(2), atol=1e-5)  # sum over H*W positions of 1/(H*W)
    scale = torch.rand(2, 1, 3, 4) + 0.5  # a positive factor per position cancels in the channel normalisation
    assert torch.allclose(P.normalized_features([f * scale]), v, atol=1e-5)
    assert torch.allclose(v[0, :12].view(3, 4), f[0, 0] / f[0].norm(dim=0) / math.sqrt(12), atol=1e-6)


def test_distance_zero_symmetric_growing_bounded(model_xy):
    model, x, _ = model_xy
    torch.manual_seed(0)
    noise = torch.randn_like(x)
    with torch.no_grad():
        assert P.perceptual_distance(model, x, x).abs().max() < 1e-6
        x2 = (x + 0.1 * noise).clamp(0, 1)
        assert torch.allclose(P.perceptual_distance(model, x, x2), P.perceptual_distance(model, x2, x), atol=1e-5)
        means = [P.perceptual_distance(model, x, (x + s * noise).clamp(0, 1)).mean().item() for s in (0.01, 0.03, 0.1, 0.3)]
        layers = len(model.feature_maps(x[:1]))
        far = P.perceptual_distance(model, x, torch.rand_like(x))
    assert means == sorted(means) and means[0] > 0
    assert far.max() <= math.sqrt(2 * layers) + 1e-4  # ReLU maps: each layer contributes at most sqrt(2)


@pytest.mark.parametrize("name", ["lpa", "ppgd"])
def test_projected_perceptual_attacks_respect_bound_and_lower_accuracy(model_xy, name):
    model, x, y = model_xy
    torch.manual_seed(0)
    attack = {"lpa": lambda: P.lpa(model, x, y, BOUND, steps=4, binary_steps=3),
              "ppgd": lambda: P.ppgd(model, x, y, BOUND, steps=3, cg_steps=3, projection_steps=6)}[name]
    x_adv = attack()
    with torch.no_grad():
        d = P.perceptual_distance(model, x, x_adv)
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert d.max() <= BOUND + 1e-4 and d.mean() > 0.5 * BOUND
    assert _acc(model, x_adv, y) <= _acc(model, x, y) - 40


def test_fast_lpa_is_soft_bounded_by_its_path_and_lowers_accuracy(model_xy):
    """Fast-LPA has no projection (the reference's soft bound): each step moves d by about its length, so d stays
    under the summed step lengths; the penalty can only pull samples in, never push them out."""
    model, x, y = model_xy
    steps, distances = 4, []
    for lam in (10.0, 0.0):
        torch.manual_seed(0)
        x_adv = P.fast_lpa(model, x, y, BOUND, steps=steps, lam=lam)
        assert x_adv.min() >= 0 and x_adv.max() <= 1
        with torch.no_grad():
            distances.append(P.perceptual_distance(model, x, x_adv))
    path = BOUND * sum(0.1 ** (t / steps) for t in range(steps))
    assert distances[0].max() <= 1.1 * path and distances[0].median() <= distances[1].median()
    torch.manual_seed(0)
    assert _acc(model, P.fast_lpa(model, x, y, BOUND, steps=steps), y) <= _acc(model, x, y) - 40


def test_fast_lpa_ascends_the_uncapped_margin_loss():
    logits, y = torch.tensor([[5.0, 1.0, -2.0], [0.0, 9.0, 1.0]]), torch.tensor([0, 0])
    assert P.unbounded_margin_sum(logits, y).item() == (1.0 - 5.0) + (9.0 - 0.0)  # no kappa cap on the 9


def test_bisection_projection_keeps_inside_points_and_projects_outside_ones(model_xy):
    model, x, _ = model_xy
    torch.manual_seed(0)
    inside = (x + 0.001 * torch.randn_like(x)).clamp(0, 1)
    far = torch.rand_like(x)
    mixed = torch.where(torch.arange(len(x))[:, None, None, None] % 2 == 0, inside, far)
    out = P.project_bisection(model, x, mixed, 0.5)
    with torch.no_grad():
        d = P.perceptual_distance(model, x, out)
    assert torch.equal(out[::2], inside[::2]) and d.max() <= 0.5 + 1e-4 and d[1::2].min() > 0.4


def test_unseen_attacks_each_lower_accuracy(model_xy):
    model, x, y = model_xy
    base = {"linf": 0.1, "l2": 1.0}
    clean = _acc(model, x, y)
    for spec in PERCEPTUAL_UNSEEN:
        spec = replace(spec, steps=min(spec.steps, 5))
        norm, eps = spec.threat("perceptual", BOUND, base)
        torch.manual_seed(0)
        x_adv = spec.build(norm, eps, 0, len(x))(model, x, y)
        assert x_adv.shape == x.shape and 0 <= x_adv.min() and x_adv.max() <= 1
        assert _acc(model, x_adv, y) <= clean - 20, spec.name(norm)


def test_rotation_translation_and_flow_warp_move_by_their_stated_units():
    torch.manual_seed(0)
    x = torch.rand(3, 1, 8, 8)
    assert torch.allclose(P.rotate_translate(x, 0.0, 0.0, 0.0), x, atol=1e-6)
    shifted = P.rotate_translate(x, 0.0, 0.125, 0.0)  # 1 pixel of 8 to the right
    assert torch.allclose(shifted[..., 1:], x[..., :-1], atol=1e-5) and shifted[..., 0].abs().max() == 0
    one_pixel = torch.zeros(3, 2, 8, 8)
    one_pixel[:, 0] = 2 / 8  # grid units: 2 / W per pixel
    assert torch.allclose(P.warp(x, one_pixel)[..., :-1], x[..., 1:], atol=1e-5)


def test_pat_objective_attacks_only_correct_samples_and_gives_selection_gradients(model_xy):
    model, x, y = model_xy
    obj = build_objective(RunConfig(dataset="synthetic", objective="pat", attack_steps=3), DATASETS.get("synthetic"))
    assert (obj.eps, obj.steps, obj.norm, obj.uses_clean, obj.uses_adv) == (BOUND, 3, "perceptual", False, True)
    y_wrong = y.clone()
    y_wrong[:10] = (y[:10] + 1) % 10
    torch.manual_seed(0)
    x_adv = obj.perturb(model, x, y_wrong)
    assert torch.equal(x_adv[:10], x[:10]) and (x_adv[10:] - x[10:]).abs().flatten(1).amax(1).min() > 0
    z = model(x_adv)
    assert torch.allclose(obj.head_loss(None, z, y), torch.nn.functional.cross_entropy(z, y, reduction="none"))
    g = head_gradients(model, obj, x, y, x_adv)
    assert g.shape == (len(x), 10 + 10 * model.feature_dim) and torch.isfinite(g).all()


@pytest.mark.skipif(not FASHION_DIRS[0].is_dir(), reason="dataset-fashion-mnist is not installed")
def test_short_pat_run_with_adv_craig_on_fashion_mnist(tmp_path):
    out = tmp_path / "pat_craig"
    rec = run(RunConfig(dataset="fashion_mnist", objective="pat", selector="craig", fraction=0.4, train_size=200,
                        val_size=50, test_size=40, epochs=2, kappa=0.5, select_every=1, attack_steps=3, eval_steps=2,
                        eval_batch_size=100, quiet=True, out=str(out)))
    assert rec["resolved"]["eps"] == DATASETS.get("fashion_mnist").eps_perceptual
    assert [s["size"] for s in rec["selections"]] == [80]
    assert rec["final"]["robust_attack"] == "pgd2_perceptual"
    assert rec["final"]["robust_acc"] <= rec["final"]["clean_acc"]
    assert (out / "model.pt").exists() and list((out / "coresets").glob("epoch_*.npz"))


def test_perceptual_suite_reports_seen_and_unseen_groups(model_xy):
    model, _, _ = model_xy
    _, test = load_synthetic(None, False)
    registered = SUITES.get("perceptual").attacks
    assert [(a.name(a.norm), a.group) for a in registered] == [
        ("ppgd10_perceptual", "seen"), ("lpa10_perceptual", "seen"), ("pgd20_linf", "unseen"), ("pgd20_l2", "unseen"),
        ("flow", "unseen"), ("rotation", "unseen")]
    for suite in ("perceptual", "perceptual_paper"):  # eval.json keys: one per attack
        specs = SUITES.get(suite).attacks
        assert len({a.name(a.threat("perceptual", BOUND, {"linf": 0.1, "l2": 1.0})[0]) for a in specs}) == len(specs)
    short = Suite(tuple(replace(a, steps=min(a.steps, 3)) for a in registered))  # the same suite, fewer iterations
    res = evaluate_model(model, test.subset(torch.arange(20)), short, "perceptual", BOUND,
                         {"linf": 0.1, "l2": 1.0, "perceptual": BOUND}, torch.device("cpu"), 20, 0, quiet=True)
    groups = res["groups"]
    assert set(groups) == {"seen", "unseen"}
    assert groups["seen"]["attacks"] == ["ppgd3_perceptual", "lpa3_perceptual"]
    assert groups["unseen"]["attacks"] == ["pgd3_linf", "pgd3_l2", "flow", "rotation"]
    for g in groups.values():
        accs = [res["attacks"][n]["acc"] for n in g["attacks"]]
        assert g["avg"] == pytest.approx(sum(accs) / len(accs)) and g["robust_acc"] <= min(accs)
    assert res["attacks"]["flow"]["eps"] == 0.05 and res["attacks"]["pgd3_l2"]["eps"] == 1.0
    assert res["attacks"]["ppgd3_perceptual"]["eps"] == BOUND
    assert res["robust_acc"] <= min(g["robust_acc"] for g in groups.values()) < res["clean_acc"]


def test_pgd_at_a_pat_runs_norm_is_ppgd_and_l_p_only_attacks_refuse_it(model_xy):
    model, x, y = model_xy
    quick = replace(SUITES.get("quick").attacks[0], steps=2)
    torch.manual_seed(3)
    via_suite = quick.build("perceptual", BOUND, 0, 10)(model, x[:10], y[:10])
    torch.manual_seed(3)
    assert torch.equal(via_suite, P.ppgd(model, x[:10], y[:10], BOUND, steps=2))  # = a pat run's quick evaluation
    _, test = load_synthetic(None, False)
    with pytest.raises(ConfigError, match="--suite"):
        evaluate_model(model, test.subset(torch.arange(4)), SUITES.get("full"), "perceptual", BOUND,
                       {"linf": 0.1, "l2": 1.0, "perceptual": BOUND}, torch.device("cpu"), 4, 0, quiet=True)


def test_every_model_gives_feature_maps_and_resnet50_runs():
    for name in MODELS.names():
        size = 64 if name == "resnet50_imagenet" else 16
        model = build_model(name, in_channels=3, num_classes=5, mean=(0.5,) * 3, std=(0.25,) * 3).eval()
        x = torch.rand(1, 3, size, size)
        with torch.no_grad():
            logits, maps = model.logits_and_maps(x)
            assert torch.allclose(logits, model(x)) and len(maps) >= 3
        assert all(m.dim() == 4 and m.shape[0] == 1 for m in maps), name
        assert [m.shape[2] for m in maps] == sorted((m.shape[2] for m in maps), reverse=True), name
    model = build_model("resnet50", in_channels=3, num_classes=10, mean=(0.5,) * 3, std=(0.25,) * 3).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10) and model.features(torch.rand(1, 3, 32, 32)).shape == (1, 2048)
    assert sum(p.numel() for p in model.parameters()) > 23_000_000


def _write_folder(root, split: str, classes: dict[str, tuple[int, int, int]], per_class: int) -> None:
    from PIL import Image

    for name, colour in classes.items():
        (root / split / name).mkdir(parents=True)
        for i in range(per_class):
            size = (40 + 7 * i, 30)  # different sizes and aspect ratios, some grey, one RGBA
            mode = ("L", "RGB", "RGBA")[i % 3]
            fill = int(sum(colour) / 3) if mode == "L" else colour if mode == "RGB" else (*colour, 255)
            Image.new(mode, size, fill).save(root / split / name / f"{i}.png")


def test_imagefolder_loads_generated_pngs(tmp_path):
    colours = {"apple": (255, 0, 0), "banana": (0, 255, 0), "cherry": (0, 0, 255)}
    _write_folder(tmp_path, "train", colours, 4)
    _write_folder(tmp_path, "val", {"banana": colours["banana"], "cherry": colours["cherry"]}, 2)
    data = load_data(RunConfig(dataset="imagefolder", data_dir=str(tmp_path), image_size=24, val_size=3))
    assert data.spec.num_classes == 3 and data.spec.shape == (3, 24, 24)
    assert len(data.train) + len(data.val) == 12 and len(data.test) == 4
    for split in (data.train, data.val, data.test):
        assert split.x.dtype == torch.uint8 and split.x.shape[1:] == (3, 24, 24)
        for img, label in zip(split.x, split.y):
            colour = list(colours.values())[int(label)]
            centre = img[:, 12, 12].tolist()
            assert centre == list(colour) or centre == [sum(colour) // 3] * 3  # grey images keep their grey level
    assert sorted(data.test.y.tolist()) == [1, 1, 2, 2]  # val's classes mapped by name to train's indices


def test_imagefolder_missing_or_mismatched_is_one_line(tmp_path, capsys):
    with pytest.raises(DataMissingError, match="imagefolder.*data_dir="):
        load_data(RunConfig(dataset="imagefolder", data_dir=str(tmp_path / "nowhere")))
    out = tmp_path / "run"
    assert main(["train", "dataset=imagefolder", f"data_dir={tmp_path / 'nowhere'}", f"out={out}", "quiet=true"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1 and not out.exists()
    _write_folder(tmp_path / "ds", "train", {"a": (1, 2, 3)}, 1)
    _write_folder(tmp_path / "ds", "val", {"b": (1, 2, 3)}, 1)
    with pytest.raises(ConfigError, match="data_dir: .* classes b"):
        load_data(RunConfig(dataset="imagefolder", data_dir=str(tmp_path / "ds"), val_size=0))
