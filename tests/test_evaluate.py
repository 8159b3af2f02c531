"""The evaluation suite: attacks equal torchattacks with the same start, curves fall with eps, AutoAttack agrees with
PGD, a gradient-masked model is flagged and a normal one is not (tolerances at least one sample, compared exactly),
accuracies are exact, evaluation is fp32, eval.json is complete, and bad input is one line. Only the tests that need
torchattacks or pyautoattack skip without them."""
from __future__ import annotations

import copy
import json
import sys

import pytest
import torch
import torch.nn as nn

from acs_core import api, attacks, evaluate
from acs_core.cli import main
from acs_core.config import RunConfig
from acs_core.data import Split, load_synthetic
from acs_core.evaluate import evaluate_model, evaluate_run, parse_eps_list, sanity_checks, tf32
from acs_core.records import MODEL
from acs_core.summary import EVAL, METRICS
from acs_core.suites import SUITES, AttackSpec, Suite
from acs_core.metrics import accuracy
from acs_core.train import run

CPU = torch.device("cpu")
EPS = {"linf": 0.1, "l2": 1.0}  # the synthetic data set's defaults
# Square (AutoAttack's gradient-free component) next to the gradient attacks: it sees through gradient masking
AA_SQUARE = Suite((AttackSpec("fgsm"), AttackSpec("pgd", steps=20), AttackSpec("autoattack", version="custom", components=("square",))))


@pytest.fixture(scope="module")
def model_and_test(trained_model) -> tuple[nn.Module, Split]:
    """The clean-trained small CNN of conftest and its first 200 synthetic test images as a Split."""
    model, _, _ = trained_model
    _, test = load_synthetic(None, False)
    return model, test.subset(torch.arange(200))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished PGD-trained synthetic run folder (seconds on a CPU)."""
    out = tmp_path_factory.mktemp("eval") / "run"
    run(RunConfig(dataset="synthetic", train_size=400, val_size=100, test_size=100, epochs=2, attack_steps=3,
                  eval_batch_size=50, quiet=True, out=str(out)))
    return out


class Rounded(nn.Module):
    """Gradient masking on purpose: inputs rounded to 16 grey levels (zero gradient) in front of the classifier."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(torch.round(x * 15) / 15)


class Fixed(nn.Module):
    """A classifier without parameters: fixed random logit weights (a buffer) on the flattened 1x16x16 image."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("weight", torch.randn(256, 10, generator=torch.Generator().manual_seed(0)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weight


class TF32Probe(Fixed):
    """Records the TF32 settings at every forward pass; raises after the first one if `fail`."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.fail, self.seen = fail, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))
        if self.fail:
            raise RuntimeError("boom")
        return super().forward(x)


# ---------------------------------------------------------------- attacks

@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_early_stop_pgd_is_torchattacks_pgd_until_a_sample_is_fooled(trained_model, tiny_model, norm):
    """l_2 runs on the untrained model: torchattacks normalises the gradient of the batch-MEAN loss plus 1e-10, which
    shortens its steps on the trained model's confident samples (gradient norms near N * 1e-10); we use the sum."""
    torchattacks = pytest.importorskip("torchattacks")
    if norm == "linf":
        model, x, y = trained_model
        x, y, eps = x[:64], y[:64], 0.1
    else:
        model, x = tiny_model, torch.rand(64, 1, 16, 16, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            y = model(x).argmax(1)
        eps = 0.3
    alpha = eps / 4
    torch.manual_seed(3)
    ours = attacks.pgd_early_stop(model, x, y, eps, alpha, 10, norm=norm)
    torch.manual_seed(3)
    ref = (torchattacks.PGD(model, eps=eps, alpha=alpha, steps=10) if norm == "linf"
           else torchattacks.PGDL2(model, eps=eps, alpha=alpha, steps=10))(x, y)
    with torch.no_grad():
        ours_ok, ref_ok = model(ours).argmax(1) == y, model(ref).argmax(1) == y
    assert 0 < ours_ok.sum() < len(y)  # both kinds of rows are tested
    # a row that ends correct was never frozen, so it followed torchattacks' trajectory exactly
    torch.testing.assert_close(ours[ours_ok], ref[ours_ok], rtol=0, atol=0 if norm == "linf" else 1e-6)
    assert not (ours_ok & ~ref_ok).any()  # freezing on the first fooling point never un-fools a sample
    delta = (ours - x).flatten(1)
    assert (delta.abs().max(1).values if norm == "linf" else delta.norm(dim=1)).max() <= eps + 1e-5


def test_restarts_update_only_still_correct_samples(trained_model):
    model, x, y = trained_model
    eps = 0.1
    single = lambda m, xb, yb: attacks.pgd_linf(m, xb, yb, eps, eps / 4, 5)  # noqa: E731
    calls = []
    counted = lambda m, xb, yb: calls.append(len(xb)) or single(m, xb, yb)  # noqa: E731
    torch.manual_seed(0)
    x_adv = attacks.with_restarts(model, x, y, counted, restarts=4)
    with torch.no_grad():
        clean_ok = model(x).argmax(1) == y
        adv_ok = model(x_adv).argmax(1) == y
    assert calls[0] == clean_ok.sum()  # misclassified samples are never attacked ...
    assert torch.equal(x_adv[~clean_ok], x[~clean_ok])  # ... and stay as they are
    assert all(a >= b for a, b in zip(calls, calls[1:]))  # each restart only on the samples still correct
    torch.manual_seed(0)  # the first of 4 restarts is this single run: more restarts only fool more samples
    one_ok = model(attacks.with_restarts(model, x, y, single, restarts=1)).argmax(1) == y
    assert not (adv_ok & ~one_ok).any() and adv_ok.sum() < one_ok.sum()
    assert (x_adv - x).abs().max() <= eps + 1e-6


def test_suite_attacks_and_fgsm_sweep_equal_torchattacks(model_and_test):
    """quick's PGD-20 (random start) and the FGSM sweep give torchattacks' accuracies with the same seed and batches."""
    torchattacks = pytest.importorskip("torchattacks")
    model, test = model_and_test
    sweep = [0.0, 0.05, 0.1]
    res = evaluate_model(model, test, SUITES.get("quick"), "linf", 0.1, EPS, CPU, 50, seed=7, fgsm_eps=sweep, quiet=True,
                         strength_subset=0)

    def ref_acc(attack) -> float:
        torch.manual_seed(7)
        correct = []
        for rows in torch.arange(len(test)).split(50):
            x, y = test.batch(rows, CPU)
            correct.append(model(attack(x, y)).argmax(1) == y)
        return 100.0 * int(torch.cat(correct).sum()) / len(test)

    assert res["attacks"]["pgd20_linf"]["acc"] == ref_acc(torchattacks.PGD(model, eps=0.1, alpha=0.025, steps=20))
    assert [p["eps"] for p in res["curves"]["fgsm_linf"]] == sweep
    assert [p["acc"] for p in res["curves"]["fgsm_linf"]] == [
        ref_acc(lambda x, y: x) if e == 0 else ref_acc(torchattacks.FGSM(model, eps=e)) for e in sweep]


def test_curves_fall_with_eps_on_a_trained_model(model_and_test):
    model, test = model_and_test
    suite = Suite((), fgsm_sweep=True, curves=("linf", "l2"))
    res = evaluate_model(model, test.subset(torch.arange(50)), suite, "linf", 0.1, EPS, CPU, 50, seed=0, quiet=True,
                         strength_subset=0)
    assert set(res["curves"]) == {"fgsm_linf", "pgd_linf", "pgd_l2"}
    for name, points in res["curves"].items():
        accs = [p["acc"] for p in points]
        assert accs[0] == res["clean_acc"] and accs[-1] < accs[0] - 20, (name, accs)
        assert all(b <= a for a, b in zip(accs, accs[1:])), (name, accs)
    assert not res["sanity"]["possible_gradient_masking"], res["sanity"]


def test_autoattack_agrees_with_pgd(model_and_test):
    pytest.importorskip("pyautoattack")
    model, test = model_and_test
    suite = Suite((AttackSpec("pgd", steps=20), AttackSpec("autoattack", version="custom", components=("apgd-ce",))))
    res = evaluate_model(model, test.subset(torch.arange(40)), suite, "linf", 0.1, EPS, CPU, 40, seed=0, quiet=True)
    pgd, aa = res["attacks"]["pgd20_linf"]["acc"], res["attacks"]["autoattack_custom_apgd-ce"]["acc"]
    assert aa < res["clean_acc"] - 10 and pgd < res["clean_acc"] - 10  # both attacks work ...
    assert aa <= pgd + 100 / 40  # ... and APGD is at least as strong as PGD (up to one image)
    assert res["robust_acc"] <= min(pgd, aa)


def test_autoattack_runs_on_a_model_without_parameters(model_and_test):
    """The device comes from the caller, not from next(model.parameters()) (StopIteration here)."""
    pytest.importorskip("pyautoattack")
    _, test = model_and_test
    suite = Suite((AttackSpec("autoattack", version="custom", components=("apgd-ce",)),))
    res = evaluate_model(Fixed(), test.subset(torch.arange(10)), suite, "linf", 0.1, EPS, CPU, 10, seed=0, quiet=True)
    assert res["attacks"]["autoattack_custom_apgd-ce"]["acc"] <= res["clean_acc"]


def test_gradient_masked_model_is_flagged_and_the_normal_one_is_not(model_and_test):
    pytest.importorskip("pyautoattack")
    model, test = model_and_test
    test = test.subset(torch.arange(16))  # at eps 0.25 the model is not robust, so Square succeeds in few queries
    masked = evaluate_model(Rounded(model), test, AA_SQUARE, "linf", 0.25, EPS, CPU, 16, seed=0, quiet=True)
    normal = evaluate_model(model, test, AA_SQUARE, "linf", 0.25, EPS, CPU, 16, seed=0, quiet=True)
    failed = {c["name"] for c in masked["sanity"]["checks"] if not c["ok"]}
    assert masked["sanity"]["possible_gradient_masking"]
    assert masked["attacks"]["pgd20_linf"]["acc"] > 90  # the gradient attacks see a robust model ...
    assert failed == {"autoattack_custom_square ~ pgd20_linf"}, masked["sanity"]  # ... Square does not
    assert not normal["sanity"]["possible_gradient_masking"], normal["sanity"]


def test_sanity_checks_flag_each_violation():
    def entry(kind, acc, steps=1, restarts=1):
        return {"kind": kind, "acc": acc, "steps": steps, "restarts": restarts, "norm": "linf", "eps": 0.1}

    good = {"fgsm_linf": entry("fgsm", 60), "pgd20_linf": entry("pgd", 50, 20), "pgd50x10_linf": entry("pgd", 49, 50, 10),
            "autoattack_standard": entry("autoattack", 45)}
    curve = {"pgd_linf": [{"eps": 0.0, "acc": 90}, {"eps": 0.1, "acc": 50}, {"eps": 0.2, "acc": 20}]}
    assert not sanity_checks(90, good, curve, 1000, [])["possible_gradient_masking"]
    bad_cases = [
        ({**good, "fgsm_linf": entry("fgsm", 95)}, curve, [], {"clean >= fgsm_linf"}),
        ({**good, "autoattack_standard": entry("autoattack", 52)}, curve, [],
         {"pgd20_linf >= autoattack_standard", "pgd50x10_linf >= autoattack_standard"}),
        ({**good, "autoattack_standard": entry("autoattack", 30)}, curve, [], {"autoattack_standard ~ pgd50x10_linf"}),
        ({**good, "pgd50x10_linf": entry("pgd", 46, 50, 10)}, curve, [], {"pgd50x10_linf ~ pgd20_linf"}),
        (good, {"pgd_linf": [{"eps": 0.0, "acc": 90}, {"eps": 0.1, "acc": 50}, {"eps": 0.2, "acc": 60}]}, [],
         {"pgd_linf non-increasing in eps"}),
        (good, curve, ["there are 3 points with zero gradient!"], {"autoattack self-checks"}),
    ]
    for attacks_, curves, warnings, names in bad_cases:
        res = sanity_checks(90, attacks_, curves, 1000, warnings)
        assert res["possible_gradient_masking"]
        assert {c["name"] for c in res["checks"] if not c["ok"]} == names
    other_threat = {**good, "pgd20_l2": {**entry("pgd", 80, 20), "norm": "l2", "eps": 1.0}}
    assert not sanity_checks(90, other_threat, curve, 1000, [])["possible_gradient_masking"]  # never compared across threats


def _failed(clean_count: int, counts: dict[str, tuple[str, int, int, int]], curve_counts: list[int], n: int) -> set[str]:
    """The names of the failed sanity checks for accuracies given as counts of n samples (kind, count, steps, restarts)."""
    pct = lambda k: 100.0 * k / n  # noqa: E731  (as evaluate_model computes them)
    attacks_ = {name: {"kind": kind, "acc": pct(k), "steps": steps, "restarts": restarts, "norm": "linf", "eps": 0.1}
                for name, (kind, k, steps, restarts) in counts.items()}
    curve = {"pgd_linf": [{"eps": 0.1 * i, "acc": pct(k)} for i, k in enumerate(curve_counts)]}
    return {c["name"] for c in sanity_checks(pct(clean_count), attacks_, curve, n, [])["checks"] if not c["ok"]}


def test_sanity_tolerances_are_one_sample_on_small_test_sets_and_exact():
    """Each tolerance is at least one sample, also for the PGD and AutoAttack gaps, and exactly one sample passes
    (at n = 7 the float test 100*3/7 >= 100*4/7 - 100/7 fails); two samples beyond the tolerance still fail."""
    # n = 7: FGSM one sample above clean, and a curve rising by one sample, are within the tolerance
    assert _failed(3, {"fgsm_linf": ("fgsm", 4, 1, 1)}, [4, 3, 4], 7) == set()
    assert _failed(3, {"fgsm_linf": ("fgsm", 5, 1, 1)}, [4, 3, 5], 7) == {"clean >= fgsm_linf", "pgd_linf non-increasing in eps"}
    # n = 30: one sample is 3.33 points > PGD_GAP_TOL
    pgd = lambda k: {"pgd20_linf": ("pgd", 15, 20, 1), "pgd50x10_linf": ("pgd", k, 50, 10)}  # noqa: E731
    assert _failed(20, pgd(14), [], 30) == set()
    assert _failed(20, pgd(13), [], 30) == {"pgd50x10_linf ~ pgd20_linf"}
    # n = 5: one sample is 20 points > AA_GAP_TOL
    aa = lambda k: {"pgd20_linf": ("pgd", 3, 20, 1), "autoattack_standard": ("autoattack", k, 1, 1)}  # noqa: E731
    assert _failed(4, aa(2), [], 5) == set()
    assert _failed(4, aa(1), [], 5) == {"autoattack_standard ~ pgd20_linf"}
    # n = 300: a tolerance of exactly 1.0 / 3.0 / 10.0 points (3 / 9 / 30 samples) passes, one sample more does not
    assert _failed(150, {"fgsm_linf": ("fgsm", 153, 1, 1)}, [], 300) == set()
    assert _failed(150, {"fgsm_linf": ("fgsm", 154, 1, 1)}, [], 300) == {"clean >= fgsm_linf"}
    assert _failed(200, {"pgd20_linf": ("pgd", 100, 20, 1), "pgd50x10_linf": ("pgd", 91, 50, 10)}, [], 300) == set()
    assert _failed(200, {"pgd20_linf": ("pgd", 100, 20, 1), "pgd50x10_linf": ("pgd", 90, 50, 10)}, [], 300) == {
        "pgd50x10_linf ~ pgd20_linf"}
    assert _failed(200, {"pgd20_linf": ("pgd", 100, 20, 1), "autoattack_standard": ("autoattack", 70, 1, 1)}, [], 300) == set()


# ---------------------------------------------------------------- exact, fp32 evaluation

def test_accuracies_are_exact_percentages():
    """3 of 10 correct is 30.0, not float32's 30.000001192092896."""
    test = Split(torch.zeros(10, 1, 16, 16, dtype=torch.uint8), torch.tensor([0, 0, 0] + [1] * 7))
    model = nn.Sequential(nn.Flatten(), nn.Linear(256, 10))
    nn.init.zeros_(model[1].weight)
    with torch.no_grad():
        model[1].bias.copy_(torch.arange(10, 0, -1.0))  # always class 0
    assert accuracy(model, test, CPU, 4) == 30.0
    res = evaluate_model(model, test, Suite(()), "linf", 0.1, EPS, CPU, 4, seed=0, quiet=True)
    assert res["clean_acc"] == res["robust_acc"] == 30.0 and json.dumps(res["clean_acc"]) == "30.0"


@pytest.mark.parametrize("fail", [False, True])
def test_evaluation_runs_without_tf32_and_restores_the_settings(model_and_test, fail):
    with tf32(True):  # not monkeypatch: under pytest 9.2 it cannot undo torch's property-like cuBLAS flag
        probe = TF32Probe(fail)
        _, test = model_and_test
        suite = Suite((AttackSpec("fgsm"),))
        if fail:
            with pytest.raises(RuntimeError, match="boom"):
                evaluate_model(probe, test.subset(torch.arange(8)), suite, "linf", 0.1, EPS, CPU, 4, seed=0, quiet=True)
        else:
            evaluate_model(probe, test.subset(torch.arange(8)), suite, "linf", 0.1, EPS, CPU, 4, seed=0, quiet=True)
        assert probe.seen and set(probe.seen) == {(False, False)}  # every pass, clean and attacked, in full fp32
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (True, True)


# ---------------------------------------------------------------- run folders and the CLI

def test_evaluate_run_writes_eval_json_and_reproduces_metrics(run_dir):
    res = evaluate_run(run_dir, "quick", fgsm_eps=[0.0, 0.1], quiet=True)
    on_disk = json.loads((run_dir / EVAL).read_text())
    metrics = json.loads((run_dir / METRICS).read_text())
    assert on_disk == json.loads(json.dumps(res))
    assert {"schema_version", "suite", "run_config_hash", "test_samples", "norm", "eps", "clean_acc", "attacks",
            "robust_acc", "robust_attack", "curves", "strength_check", "sanity", "seconds", "environment"} <= set(res)
    assert res["robust_attack"] == "PGD-20" and res["attacks"]["pgd20_linf"]["label"] == "PGD-20"
    assert res["strength_check"]["subset"] == min(SUITES.get("quick").strength_subset, res["test_samples"])
    assert (res["schema_version"], res["suite"], res["run_config_hash"]) == (1, "quick", metrics["config_hash"])
    final = metrics["final"]  # the same attack, seed, batches and test split as the run's final evaluation
    assert (res["test_samples"], res["clean_acc"], res["attacks"]["pgd20_linf"]["acc"]) == (
        final["test_samples"], final["clean_acc"], final["robust_acc"])
    assert res["robust_acc"] == final["robust_acc"] and list(res["curves"]) == ["fgsm_linf"]
    assert not res["sanity"]["possible_gradient_masking"], res["sanity"]  # a normally (PGD-) trained run
    assert {"acc", "norm", "eps", "steps", "restarts", "seconds"} <= set(res["attacks"]["pgd20_linf"])


def test_run_record_reads_a_real_run_folder(run_dir, tmp_path):
    """api.read_run, the engine's run-to-record function: an evaluated folder is one complete row of its metrics.json
    and eval.json numbers (eval.json's accuracies win); without eval.json it is incomplete with the in-run ones."""
    evaluate_run(run_dir, "quick", fgsm_eps=[0.0, 0.1], quiet=True)
    metrics = json.loads((run_dir / METRICS).read_text())
    evaluation = json.loads((run_dir / EVAL).read_text())
    run = api.read_run(run_dir)
    row = run.record()
    assert run.complete and (row["run_epochs"], row["selections"], row["epoch_equivalents"]) == (2, 0, 2.0)
    assert (row["clean_acc"], row["robust_acc"], row["robust_attack"], row["suite"]) == (
        evaluation["clean_acc"], evaluation["robust_acc"], "PGD-20", "quick")
    assert row["acc_pgd20_linf"] == evaluation["attacks"]["pgd20_linf"]["acc"]
    assert row["time_train"] == metrics["timings"]["training_epochs"] > 0
    assert row["training_passes"] == metrics["compute"]["training_passes"] > 0
    assert row["strength_flagged"] is False and row["run_device"] == "cpu"
    assert [(c["curve"], c["eps"]) for c in run.curves()] == [("fgsm_linf", 0.0), ("fgsm_linf", 0.1)]
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / METRICS).write_text((run_dir / METRICS).read_text())
    run = api.read_run(bare)
    row = run.record()
    assert not run.complete and row["robust_acc"] == metrics["final"]["robust_acc"] and "suite" not in row
    none = api.read_run(tmp_path / "none")
    assert run.curves() == [] and not none.complete and none.record() == {}


def test_strength_subset_option(run_dir, tmp_path):
    """--strength-subset sets the check's size; a negative one is one line, exit 2, nothing written."""
    out = tmp_path / "quick.json"
    assert main(["evaluate", str(run_dir), "--quiet", "--strength-subset", "20", "--out", str(out)]) == 0
    check = json.loads(out.read_text())["strength_check"]
    assert {"reference", "subset", "suite_robust_acc", "combined_robust_acc", "gap", "threshold", "p_value", "flagged",
            "seconds", "autoattack_warnings", "in_suite"} == set(check) and (check["reference"], check["subset"]) == ("APGD-CE+APGD-DLR", 20)
    assert not check["in_suite"]  # the quick suite does not run APGD: the check attacks the subset itself
    bad = tmp_path / "bad.json"
    assert main(["evaluate", str(run_dir), "--quiet", "--strength-subset", "-1", "--out", str(bad)]) == 2
    assert not bad.exists()


def test_paper_suite_on_a_subset(run_dir, tmp_path):
    out = tmp_path / "paper.json"
    assert main(["evaluate", str(run_dir), "--suite", "paper", "--test-size", "30", "--out", str(out), "--quiet"]) == 0
    res = json.loads(out.read_text())
    pgd = res["attacks"]["pgd50x10_linf"]
    assert (res["test_samples"], pgd["steps"], pgd["restarts"], pgd["alpha"]) == (30, 50, 10, pytest.approx(0.1 / 4))
    assert res["robust_acc"] == pgd["acc"] <= res["clean_acc"]
    assert not (run_dir / EVAL).exists() or json.loads((run_dir / EVAL).read_text())["suite"] != "paper"


@pytest.mark.parametrize("case", ["bad suite", "missing folder", "corrupt model", "empty model", "list model",
                                  "model spec with another key", "model without state_dict", "corrupt metrics",
                                  "bad eps", "bad device"])
def test_bad_input_one_line_exit_2_nothing_written(run_dir, tmp_path, capsys, case):
    folder = tmp_path / "copy"
    folder.mkdir()
    for name in (METRICS, MODEL):
        (folder / name).write_bytes((run_dir / name).read_bytes())
    args = {"bad suite": ["--suite", "paper9"], "bad eps": ["--fgsm-eps", "0,x"], "bad device": ["--device", "tpu"]}.get(case, [])
    if case == "missing folder":
        folder = tmp_path / "nope"
    elif case == "corrupt model":
        (folder / MODEL).write_bytes(b"not a checkpoint" * 4)
    elif case == "empty model":
        (folder / MODEL).write_bytes(b"")
    elif case == "list model":  # loads, but is not a checkpoint
        torch.save([1, 2, 3], folder / MODEL)
    elif case == "model spec with another key":
        saved = torch.load(run_dir / MODEL, weights_only=True)
        torch.save({**saved, "spec": {**saved["spec"], "depth": 3}}, folder / MODEL)
    elif case == "model without state_dict":
        torch.save({"spec": torch.load(run_dir / MODEL, weights_only=True)["spec"]}, folder / MODEL)
    elif case == "corrupt metrics":
        (folder / METRICS).write_text("{ half")
    assert main(["evaluate", str(folder), "--quiet", *args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("acs: error:"), lines
    assert not (folder / EVAL).exists()


@pytest.mark.parametrize("suite", ["full", "quick"])  # quick: its attack-strength check is APGD
def test_missing_pyautoattack_fails_before_any_attack_runs(run_dir, tmp_path, monkeypatch, capsys, suite):
    monkeypatch.setitem(sys.modules, "pyautoattack", None)  # import pyautoattack now raises ImportError

    def no_attack(*args, **kwargs):
        raise AssertionError("an evaluation pass ran before the missing package was reported")

    monkeypatch.setattr(evaluate, "correct_mask", no_attack)
    out = tmp_path / "eval.json"
    assert main(["evaluate", str(run_dir), "--suite", suite, "--out", str(out), "--quiet"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("acs: error:") and "pyautoattack" in lines[0], lines
    assert not out.exists()


def test_parse_eps_list():
    assert parse_eps_list("0, 8/255,0.1") == [0.0, 8 / 255, 0.1]


def test_compiled_evaluation_agrees_with_eager(model_and_test, monkeypatch):
    """compile=True attacks the model through torch.compile (here AOTAutograd without code generation, seconds instead
    of a C++ build): the same clean and robust accuracy as eager within 1 point (2 of 200 images; float reassociation
    may move a sample at the decision boundary), the same strength-check verdict, and the parameters trainable again."""
    real = torch.compile
    compiled_calls = []
    monkeypatch.setattr(torch, "compile", lambda fn: compiled_calls.append(fn) or real(fn, backend="aot_eager"))
    shared, test = model_and_test
    model = copy.deepcopy(shared)  # compiling leaves dynamo's state on the module: keep the session's model out of it
    results = [evaluate_model(model, test, SUITES.get("quick"), "linf", 0.1, EPS, CPU, 50, seed=3, quiet=True,
                              strength_subset=60, compile=flag) for flag in (False, True)]
    eager, compiled = results
    assert compiled_calls, "the compiled evaluation never called torch.compile"
    assert compiled["clean_acc"] == eager["clean_acc"]
    assert abs(compiled["robust_acc"] - eager["robust_acc"]) <= 1.0
    assert compiled["strength_check"]["flagged"] == eager["strength_check"]["flagged"]
    assert all(p.requires_grad for p in model.parameters())


def test_evaluate_run_compiles_as_the_run_did_unless_told(run_dir, monkeypatch):
    """acs evaluate takes the run's own compile setting (false here) and --compile turns it on; eval.json records it."""
    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn: real(fn, backend="aot_eager"))
    assert evaluate_run(run_dir, "quick", out=run_dir / "eager.json", quiet=True, strength_subset=0)["compile"] is False
    assert main(["evaluate", str(run_dir), "--compile", "--strength-subset", "0", "--out", str(run_dir / "c.json"),
                 "--quiet"]) == 0
    assert json.loads((run_dir / "c.json").read_text())["compile"] is True
