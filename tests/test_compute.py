"""Compute accounting: the sample-passes a run records equal hand-computed counts (issue 16), per phase.

An attack step on b samples is b forward + b backward passes; a no-grad pass b forward passes. Tiny synthetic runs:
n = 300 training samples, 100 validation, 100 test, K = 2 attack steps, PGD-2 quick evaluation.
"""
from __future__ import annotations

import pytest
import torch

from acs_core.config import RunConfig
from acs_core.models import build_model
from acs_core.timing import PhaseTimer
from acs_core.train import run

N, VAL, TEST, K = 300, 100, 100, 2
SMALL = dict(dataset="synthetic", train_size=N, val_size=VAL, test_size=TEST, attack_steps=K, eval_steps=K, batch_size=64,
             eval_batch_size=64, quiet=True)


def _run(tmp_path, **keys):
    return run(RunConfig(**SMALL, **keys, out=str(tmp_path / "run")))


def _fb(forward: int, backward: int) -> dict[str, int]:
    return {"forward": forward, "backward": backward}


def test_timer_counts_passes_in_the_innermost_phase():
    model = build_model("small_cnn", in_channels=1, num_classes=10, mean=(0.5,), std=(0.25,))
    timer = PhaseTimer(torch.device("cpu"))
    timer.watch(model)
    x = torch.rand(8, 1, 16, 16)
    with timer("outer"):
        with timer("inner"):
            model(x).sum().backward()  # 8 forward + 8 backward
        with torch.no_grad():
            model(x[:3])  # 3 forward, no backward
    assert timer.state()["passes"] == {"inner": _fb(8, 8), "outer": _fb(3, 0)}
    assert timer.cpu["outer"] >= timer.cpu["inner"] >= 0.0


@pytest.mark.parametrize("objective, attack, update", [
    ("pgd_linf", _fb(K, K), _fb(1, 1)),  # PGD-K: K steps; CE at x_adv
    ("trades", _fb(1 + K, K), _fb(2, 2)),  # one clean pass for the KL target + K steps; CE(x) + KL(x, x_adv)
])
def test_full_run_counts(tmp_path, objective, attack, update):
    epochs = 2
    rec = _run(tmp_path, objective=objective, epochs=epochs)
    c = rec["compute"]
    per_epoch = {k: attack[k] + update[k] for k in attack}
    assert c["passes"]["train_attack"] == _fb(epochs * N * attack["forward"], epochs * N * attack["backward"])
    assert c["passes"]["train_step"] == _fb(epochs * N * update["forward"], epochs * N * update["backward"])
    assert c["passes"]["validation"] == _fb(epochs * VAL, 0)
    assert c["passes"]["evaluation"] == _fb(TEST + TEST * K + TEST, TEST * K)  # clean, PGD-K, attacked forward
    assert c["epoch_passes"] == N * sum(per_epoch.values())
    assert c["training_passes"] == epochs * (N * sum(per_epoch.values()) + VAL)
    assert c["training_epoch_equivalents"] == pytest.approx(epochs + epochs * VAL / c["epoch_passes"])
    assert c["schedule_bound"] is None and c["proxy_passes"] == 0
    assert set(rec["timings"]["cpu"]) >= {"train_attack", "train_step", "validation", "evaluation", "training_epochs"}


def test_coreset_run_with_one_selection(tmp_path):
    """E = 4, kappa 0.5, c = 0.3: epoch 0 full (round(0.3 * 2) = 1), epoch 1 skipped, one selection at epoch 2 (T = 20)
    attacking all n candidates with PGD-K (K forward + K backward each) and one forward for their features, then
    epochs 2 and 3 on the round(0.3 * n) = 90 coreset rows."""
    rec = _run(tmp_path, objective="pgd_linf", selector="craig", fraction=0.3, epochs=4, kappa=0.5, select_every=20)
    c, k = rec["compute"], 90
    trained = N + 2 * k
    assert [h["phase"] for h in rec["history"]] == ["full", "skip", "coreset", "coreset"]
    assert c["passes"]["train_attack"] == _fb(trained * K, trained * K)
    assert c["passes"]["train_step"] == _fb(trained, trained)
    assert c["passes"]["selection_attack"] == _fb(N * K, N * K)
    assert c["passes"]["selection_features"] == _fb(N, 0)
    assert c["passes"]["validation"] == _fb(3 * VAL, 0)
    epoch_passes = N * (2 * K + 2)
    selection = 2 * N * K + N
    assert c["epoch_passes"] == epoch_passes
    assert c["training_passes"] == trained * (2 * K + 2) + selection + 3 * VAL
    assert c["schedule_bound"] == pytest.approx(4 / (trained / N + selection / epoch_passes))
    assert c["bound_ratio"] == pytest.approx(4 / c["training_epoch_equivalents"] / c["schedule_bound"])
    assert c["bound_ratio"] < 1  # validation passes are outside the schedule's bound
