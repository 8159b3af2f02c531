"""The `apgd` suite and the attack-strength check of every evaluation: a model whose cross-entropy gradients are masked
passes PGD-20 but is flagged, a plain small CNN is not, the check's test is the exact binomial one on a fixed stratified
subset, and eval.json names the attacks behind robust_acc."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from acs_core import attacks
from acs_core.data import Split, load_synthetic
from acs_core.evaluate import STRENGTH_MARGIN, binomial_tails, evaluate_model, strength_rows, strength_verdict
from acs_core.suites import APGD, SUITES, AttackSpec, Suite

pytest.importorskip("pyautoattack")
CPU = torch.device("cpu")
EPS = {"linf": 0.1, "l2": 1.0}  # the synthetic data set's defaults
QUICK = SUITES.get("quick")
TRAIN_EPS = 0.05  # the small CNN's training and evaluation eps (at 0.1 it does not learn in three epochs)


class Saturated(nn.Module):
    """Gradient masking on purpose: the logits x 1,000, so the softmax saturates and the cross-entropy gradient of every
    confidently classified input is exactly zero in float32; the argmax, and the scale-invariant DLR loss, are unchanged."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 1000.0 * self.model(x)


@pytest.fixture(scope="module")
def model_and_test() -> tuple[nn.Module, Split]:
    """A small CNN (a tenth of small_cnn's cost, for APGD's 200 iterations) trained briefly on the synthetic set, one
    clean epoch then two of PGD-5 at TRAIN_EPS, and the first 100 synthetic test images (about 65% robust at
    TRAIN_EPS)."""
    train, test = load_synthetic(None, False)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1),
                          nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(256, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for epoch in range(3):
        for rows in torch.randperm(len(train)).split(64):
            x, y = train.batch(rows, CPU)
            if epoch:
                x = attacks.pgd_linf(model, x, y, TRAIN_EPS, TRAIN_EPS / 4, 5)
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    return model.eval(), test.subset(torch.arange(100))


def _quick(model: nn.Module, test: Split, strength_subset: int | None = None) -> dict:
    return evaluate_model(model, test, QUICK, "linf", TRAIN_EPS, EPS, CPU, 100, seed=0, quiet=True,
                          strength_subset=strength_subset)


# ---------------------------------------------------------------- acceptance (issue 19)

def test_masked_cross_entropy_passes_pgd20_but_the_strength_check_flags_it(model_and_test):
    model, test = model_and_test
    res = _quick(Saturated(model), test)
    check = res["strength_check"]
    assert res["attacks"]["pgd20_linf"]["acc"] > res["clean_acc"] - 5  # PGD-20 sees a robust model ...
    assert check["flagged"] and check["gap"] > 20, check  # ... APGD-DLR does not
    assert check["reference"] == "APGD-CE+APGD-DLR" and check["subset"] == QUICK.strength_subset == 100
    failed = [c["name"] for c in res["sanity"]["checks"] if not c["ok"]]
    assert failed == ["strength check: APGD-CE+APGD-DLR on 100 images"] and res["sanity"]["possible_gradient_masking"]


def test_a_plain_small_cnn_is_not_flagged(model_and_test):
    model, test = model_and_test
    res = _quick(model, test)
    check = res["strength_check"]
    assert 20 < check["suite_robust_acc"] < 80  # PGD-20 leaves robust images for APGD to fool: the check has work
    assert not check["flagged"] and check["gap"] < check["threshold"], check
    assert not res["sanity"]["possible_gradient_masking"], res["sanity"]


@pytest.mark.parametrize("masked", [True, False])
def test_a_disabled_check_records_nothing_and_flags_nothing(model_and_test, masked):
    """With 0 images there is no check: the masked model goes unflagged, which is what the check exists for."""
    model, test = model_and_test
    res = _quick(Saturated(model) if masked else model, test, strength_subset=0)
    assert res["strength_check"] is None and not res["sanity"]["possible_gradient_masking"]


def test_the_apgd_suite_checks_the_whole_split_from_its_own_attacks(model_and_test, monkeypatch):
    """A suite that runs the reference itself is checked on every test image, PGD-20 against APGD-CE+DLR, with no
    second AutoAttack run; the masked model is flagged, and the combined accuracy is the suite's robust_acc."""
    import pyautoattack

    calls = []
    original = pyautoattack.AutoAttack.run_standard_evaluation
    monkeypatch.setattr(pyautoattack.AutoAttack, "run_standard_evaluation",
                        lambda self, x, y, **kw: calls.append(len(x)) or original(self, x, y, **kw))
    model, test = model_and_test
    test = test.subset(torch.arange(40))
    res = evaluate_model(Saturated(model), test, SUITES.get("apgd"), "linf", TRAIN_EPS, EPS, CPU, 40, seed=0, quiet=True)
    check = res["strength_check"]
    assert len(calls) == 1 and check["in_suite"] and check["subset"] == 40 and check["seconds"] == 0.0
    assert check["suite_robust_acc"] == res["attacks"]["pgd20_linf"]["acc"] and check["flagged"], check
    assert check["combined_robust_acc"] == res["robust_acc"]


# ---------------------------------------------------------------- the check's statistics and subset

def test_strength_verdict_is_the_exact_one_sided_binomial_test():
    tails = binomial_tails(5, 0.02)
    assert tails[0] == pytest.approx(1.0) and tails[6] == 0.0
    assert tails[1] == pytest.approx(1 - 0.98 ** 5) and tails[5] == pytest.approx(0.02 ** 5)
    assert binomial_tails(10000, 0.02)[0] == pytest.approx(1.0)  # no underflow on a whole test split
    tails = binomial_tails(200, STRENGTH_MARGIN / 100)
    v = strength_verdict(200, 120, 11)  # P(Binomial(200, 0.03) >= 11) <= 0.05 < P(>= 10)
    assert (v["suite_robust_acc"], v["combined_robust_acc"], v["gap"], v["threshold"]) == (60.0, 54.5, 5.5, 5.5)
    assert v["flagged"] and v["p_value"] == tails[11] <= 0.05 < tails[10]
    assert not strength_verdict(200, 120, 10)["flagged"]
    assert [strength_verdict(n, n, 0)["threshold"] for n in (20, 50, 100)] == [15.0, 10.0, 7.0]


def test_the_subset_is_fixed_and_stratified():
    _, test = load_synthetic(None, False)
    rows = strength_rows(test, 200)
    assert torch.equal(rows, strength_rows(test, 200)) and len(rows) == len(set(rows.tolist())) == 200
    shares = torch.bincount(test.y[rows], minlength=10) / 200
    assert (shares - torch.bincount(test.y, minlength=10) / len(test)).abs().max() <= 1 / 200  # largest remainders
    assert torch.equal(strength_rows(test.subset(torch.arange(50)), 200), torch.arange(50))  # a smaller split: all of it


def test_the_check_is_seeded_and_only_attacks_what_the_suite_left_robust(model_and_test, monkeypatch):
    import pyautoattack

    attacked = []
    original = pyautoattack.AutoAttack.run_standard_evaluation
    monkeypatch.setattr(pyautoattack.AutoAttack, "run_standard_evaluation",
                        lambda self, x, y, **kw: attacked.append(len(x)) or original(self, x, y, **kw))
    model, test = model_and_test
    a, b = (_quick(model, test.subset(torch.arange(40)))["strength_check"] for _ in range(2))
    assert {k: v for k, v in a.items() if k != "seconds"} == {k: v for k, v in b.items() if k != "seconds"}
    assert attacked == [round(a["suite_robust_acc"] * 40 / 100)] * 2 and 0 < attacked[0] < 40
    assert a["combined_robust_acc"] == pytest.approx(a["suite_robust_acc"] - a["gap"])


def test_two_classes_check_with_apgd_ce_alone():
    """The DLR loss needs a third-largest logit: with two classes the reference is APGD-CE."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(256, 2))
    test = Split(torch.randint(0, 256, (20, 1, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)),
                 torch.arange(20) % 2)
    res = evaluate_model(model, test, Suite(()), "linf", 0.1, EPS, CPU, 20, seed=0, quiet=True)
    assert res["strength_check"]["reference"] == "APGD-CE" and res["strength_check"]["subset"] == 20


def test_no_check_in_a_perceptual_threat_model(model_and_test):
    model, test = model_and_test
    res = evaluate_model(model, test.subset(torch.arange(4)), Suite(()), "perceptual", 0.5,
                         {**EPS, "perceptual": 0.5}, CPU, 4, seed=0, quiet=True)
    assert res["strength_check"] is None


# ---------------------------------------------------------------- the apgd suite and the names of the attacks

@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_apgd_suite_is_apgd_ce_dlr_and_pgd20_at_the_runs_threat_model(model_and_test, monkeypatch, norm):
    import pyautoattack

    seen = []
    original = pyautoattack.AutoAttack.run_standard_evaluation

    def spy(self, x, y, **kwargs):
        seen.append((self.attacks_to_run, self.norm, self.epsilon, self.apgd.n_restarts, self.apgd.n_iter, self.seed))
        x_adv, y_adv = original(self, x, y, **kwargs)
        delta = (x_adv - x).flatten(1)
        assert (delta.abs().max(1).values if norm == "linf" else delta.norm(dim=1)).max() <= self.epsilon + 1e-5
        return x_adv, y_adv

    monkeypatch.setattr(pyautoattack.AutoAttack, "run_standard_evaluation", spy)
    model, test = model_and_test
    eps = {"linf": TRAIN_EPS, "l2": 0.5}[norm]
    res = evaluate_model(model, test.subset(torch.arange(40)), SUITES.get("apgd"), norm, eps, EPS, CPU, 40, seed=5,
                         quiet=True, strength_subset=0)
    assert seen == [(["apgd-ce", "apgd-dlr"], {"linf": "Linf", "l2": "L2"}[norm], eps, 1, 100, 5)]
    apgd, pgd = res["attacks"]["autoattack_custom_apgd-ce_apgd-dlr"], res["attacks"][f"pgd20_{norm}"]
    assert (apgd["label"], apgd["steps"], apgd["restarts"], apgd["norm"], apgd["eps"]) == ("APGD-CE+APGD-DLR", 100, 1, norm, eps)
    assert res["robust_attack"] == "APGD-CE+APGD-DLR+PGD-20"
    assert res["robust_acc"] <= min(apgd["acc"], pgd["acc"]) and apgd["acc"] < res["clean_acc"]


def test_labels_name_the_attacks_behind_robust_acc():
    assert {name: SUITES.get(name).label("linf") for name in SUITES.names()} == {
        "quick": "PGD-20", "paper": "PGD-50x10", "paper_trades": "PGD-50x20", "apgd": "APGD-CE+APGD-DLR+PGD-20",
        "paper_apgd": "APGD-CE+APGD-DLR+PGD-20+PGD-50x10", "paper_trades_apgd": "APGD-CE+APGD-DLR+PGD-20+PGD-50x20",
        "paper_l2": "PGD-50x10", "paper_l2_apgd": "APGD-CE+APGD-DLR+PGD-20+PGD-50x10",
        "full": "FGSM+PGD-20+PGD-50x10+AutoAttack",
        "perceptual": "PPGD-10+LPA-10+PGD-20 l_inf+PGD-20 l_2+Flow-20+Rotation",
        "perceptual_paper": "PPGD-40+LPA-40+AutoAttack l_inf+AutoAttack l_2+Flow-100+Rotation"}
    assert QUICK.label("perceptual") == "PPGD-20" and Suite(()).label("linf") == "clean"
    assert AttackSpec("autoattack", version="custom", components=("apgd-ce", "square")).label("l2") == "APGD-CE+Square"
    assert APGD.label("l2") == "APGD-CE+APGD-DLR"

