"""End-to-end runs: the run folder, train/eval modes, coreset bookkeeping, resume after a kill, real Fashion-MNIST."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from acs_core.config import RunConfig
from acs_core.data import load_data
from acs_core.records import load_run
from acs_core.train import run

SYNTH = dict(dataset="synthetic", train_size=600, val_size=200, epochs=4, batch_size=64, attack_steps=3, eval_steps=5, quiet=True)


def test_end_to_end_synthetic_coreset_run(tmp_path):
    cfg = RunConfig(**SYNTH, selector="random", fraction=0.5, kappa=0.5, select_every=1, out=str(tmp_path / "run"))
    record = run(cfg)
    assert [h["phase"] for h in record["history"]] == ["full", "skip", "coreset", "coreset"]
    assert [s["epoch"] for s in record["selections"]] == [2, 3]
    for key in ("train_attack", "train_step", "selection", "evaluation", "validation", "total"):
        assert record["timings"][key] >= 0
    assert record["timings"]["total"] >= record["timings"]["train_attack"]
    assert 0 <= record["final"]["robust_acc"] <= record["final"]["clean_acc"] <= 100
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["schema_version"] == 1 and saved["config"]["fraction"] == 0.5
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
    # the coreset file maps rows of the training split back to the source data set's indices
    data = load_data(cfg)
    core = np.load(tmp_path / "run" / record["selections"][0]["file"])
    assert len(core["rows"]) == round(0.5 * len(data.train)) == record["selections"][0]["size"]
    assert np.array_equal(data.train.index[torch.from_numpy(core["rows"])].numpy(), core["dataset_index"])
    assert (core["weights"] > 0).all()
    # the saved model reloads and reproduces the recorded clean accuracy
    model, rec = load_run(tmp_path / "run")
    x, y = data.test.batch(torch.arange(len(data.test)), torch.device("cpu"))
    with torch.no_grad():
        acc = 100.0 * (model(x).argmax(1) == y).float().mean().item()
    assert abs(acc - rec["final"]["clean_acc"]) < 1e-6
    # rerunning a finished run does nothing and returns the same record
    assert run(cfg)["timings"] == record["timings"]


def test_batchnorm_mode_eval_in_attack_train_in_update(tmp_path):
    """The attack sees frozen BatchNorm (eval) and the update runs in train mode again (the reference TRADES bug)."""
    from acs_core import train as train_mod

    modes: list[bool] = []
    original = train_mod.build_model

    def spy_model(**spec):
        model = original(**spec)
        bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
        bn.register_forward_pre_hook(lambda mod, inp: modes.append(mod.training))
        return model

    train_mod.build_model = spy_model
    try:
        run(RunConfig(**{**SYNTH, "epochs": 1, "train_size": 64, "attack_steps": 2}, objective="trades",
                      out=str(tmp_path / "r")))  # 64 training images = one batch
    finally:
        train_mod.build_model = original
    # one training batch of TRADES: clean pass for p(x) + 2 attack steps in eval, then clean + adversarial in train
    assert modes[:5] == [False, False, False, True, True]


def _run_cli(out: Path) -> subprocess.Popen:
    args = [f"{k}={v}" for k, v in {**SYNTH, "epochs": 5, "selector": "random", "fraction": 0.5, "kappa": 0.4,
                                    "select_every": 2, "out": out}.items()]
    return subprocess.Popen([sys.executable, "-m", "acs_core", "train", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_resume_after_kill_gives_identical_metrics(tmp_path):
    ref = _run_cli(tmp_path / "ref")
    assert ref.wait(timeout=300) == 0, ref.stderr.read()
    victim = _run_cli(tmp_path / "victim")
    ckpt = tmp_path / "victim" / "checkpoint.pt"
    deadline = time.time() + 300
    while time.time() < deadline:  # kill -9 once two epochs are checkpointed
        if ckpt.exists() and torch.load(ckpt, weights_only=False)["state"]["epoch"] >= 3:
            break
        time.sleep(0.05)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert not (tmp_path / "victim" / "metrics.json").exists()
    again = _run_cli(tmp_path / "victim")
    assert again.wait(timeout=300) == 0, again.stderr.read()
    a, b = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("ref", "victim"))
    assert a["final"] == b["final"]
    strip = lambda hist: [{k: v for k, v in h.items() if k != "seconds"} for h in hist]  # noqa: E731
    assert strip(a["history"]) == strip(b["history"])
    for sel in a["selections"]:
        ra, rb = (np.load(tmp_path / d / sel["file"]) for d in ("ref", "victim"))
        assert np.array_equal(ra["rows"], rb["rows"])


def test_resume_refuses_a_different_run(tmp_path):
    from acs_core.records import RunFolderError

    run(RunConfig(**{**SYNTH, "epochs": 1}, out=str(tmp_path / "r")))
    with pytest.raises(RunFolderError, match="different"):
        run(RunConfig(**{**SYNTH, "epochs": 2}, out=str(tmp_path / "r")))


@pytest.mark.slow
def test_short_real_fashion_mnist_run(tmp_path):
    """PGD training on a 2,000-image Fashion-MNIST subset learns: clean accuracy far above chance, robust > 0."""
    record = run(RunConfig(dataset="fashion_mnist", train_size=2000, val_size=500, test_size=500, epochs=2,
                           attack_steps=3, eval_steps=10, quiet=True, out=str(tmp_path / "fm")))
    assert record["resolved"]["train_samples"] == 2000
    assert record["final"]["clean_acc"] > 50
    assert 0 < record["final"]["robust_acc"] < record["final"]["clean_acc"]


@pytest.mark.parametrize("option", [{"amp": "bf16"}, {"channels_last": True}])
def test_autocast_and_channels_last_runs(tmp_path, option):
    record = run(RunConfig(**{**SYNTH, "epochs": 1, "train_size": 128}, **option, out=str(tmp_path / "r")))
    assert record["config"][next(iter(option))] == next(iter(option.values()))
    assert 0 <= record["final"]["clean_acc"] <= 100
