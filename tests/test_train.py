"""End-to-end runs: the run folder, train/eval modes, coreset weights, AMP and channels_last, resume after a kill,
checkpoints loadable with weights_only, the run folder's lock, real Fashion-MNIST."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from acs_core import train as train_mod
from acs_core.config import RunConfig
from acs_core.data import load_data
from acs_core.records import load_run
from acs_core.selection import Coreset
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
    env = record["environment"]  # provenance: the project's commit, the CPU and its threads
    assert env["cpu_threads"] == torch.get_num_threads() and env["cpu"] and len(env["commit"] or "x" * 40) == 40
    assert env["tree_modified"] in (True, False, None)
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


def _spy_on_model(monkeypatch: pytest.MonkeyPatch, install: Callable[[torch.nn.Module], None]) -> None:
    """Let `install` put hooks on the model of the next run (built in acs_core.train)."""
    build = train_mod.build_model

    def spied(**spec: object) -> torch.nn.Module:
        model = build(**spec)
        install(model)
        return model

    monkeypatch.setattr(train_mod, "build_model", spied)


def test_batchnorm_mode_eval_in_attack_train_in_update(tmp_path, monkeypatch):
    """The attack sees frozen BatchNorm (eval) and the update runs in train mode again (the reference TRADES bug)."""
    modes: list[bool] = []

    def install(model: torch.nn.Module) -> None:
        bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
        bn.register_forward_pre_hook(lambda mod, inp: modes.append(mod.training))

    _spy_on_model(monkeypatch, install)
    run(RunConfig(**{**SYNTH, "epochs": 1, "train_size": 64, "attack_steps": 2}, objective="trades",
                  out=str(tmp_path / "r")))  # 64 training images = one batch
    # one training batch of TRADES: clean pass for p(x) + 2 attack steps in eval, then clean + adversarial in train
    assert modes[:5] == [False, False, False, True, True]


@pytest.mark.parametrize("attack_bn", ["eval", "train"])
def test_attack_batchnorm_mode_is_the_one_asked_for(tmp_path, monkeypatch, attack_bn):
    """attack_bn=train (the reference's PGD scripts): the training attack and the selection run BatchNorm in train mode,
    the attack moves the running statistics and the selection leaves them as they were; eval: the attack moves nothing.
    Every update trains in train mode either way."""
    from acs_core.objectives import OBJECTIVES

    pgd = OBJECTIVES.get("pgd_linf")
    attack, select = pgd.adversarial, train_mod.select_coreset
    seen: dict[str, list] = {"attack": [], "selection": []}

    def first_bn(model: torch.nn.Module) -> torch.nn.BatchNorm2d:
        return next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))

    def spied_attack(self, model, x, y):  # noqa: ANN001
        bn = first_bn(model)
        before = bn.running_mean.clone()
        out = attack(self, model, x, y)
        seen["attack"].append((bn.training, not torch.equal(before, bn.running_mean)))
        return out

    def spied_select(exp, *args, **kwargs):  # noqa: ANN001
        bn = first_bn(exp.model)
        before, modes = bn.running_mean.clone(), []
        hook = bn.register_forward_pre_hook(lambda mod, inp: modes.append(mod.training))
        coreset = select(exp, *args, **kwargs)
        hook.remove()
        seen["selection"].append((frozenset(modes), torch.equal(before, bn.running_mean), exp.model.training))
        return coreset

    monkeypatch.setattr(pgd, "adversarial", spied_attack)
    monkeypatch.setattr(train_mod, "select_coreset", spied_select)
    run(RunConfig(**{**SYNTH, "epochs": 2, "train_size": 128, "attack_steps": 2}, selector="craig", fraction=0.5,
                  kappa=0.0, attack_bn=attack_bn, out=str(tmp_path / "r")))
    train = attack_bn == "train"
    assert seen["attack"] and set(seen["attack"]) == {(train, train)}
    assert seen["selection"] and set(seen["selection"]) == {(frozenset({train}), True, True)}  # back in train mode afterwards


def test_coreset_weights_change_the_model(tmp_path, monkeypatch):
    """CRAIG's weights (cluster sizes) reach the loss: the same run with the same coreset at unit weights trains
    another model (a loop that ignored the weights would train the same one)."""
    cfg = dict(**{**SYNTH, "epochs": 1, "train_size": 300}, selector="craig", fraction=0.3, kappa=0.0)
    run(RunConfig(**cfg, out=str(tmp_path / "weighted")))
    select = train_mod.select_coreset

    def unit_weights(*args: object) -> Coreset:
        coreset = select(*args)
        return Coreset(coreset.indices, torch.ones(len(coreset.indices)), coreset.info)

    monkeypatch.setattr(train_mod, "select_coreset", unit_weights)
    run(RunConfig(**cfg, out=str(tmp_path / "unit")))
    weighted, unit = (np.load(tmp_path / d / "coresets" / "epoch_0000.npz") for d in ("weighted", "unit"))
    assert np.array_equal(weighted["rows"], unit["rows"]) and (unit["weights"] == 1).all()
    assert len(np.unique(weighted["weights"])) > 1
    a, b = (load_run(tmp_path / d)[0].state_dict() for d in ("weighted", "unit"))
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())


def _train_command(out: Path, **settings: object) -> list[str]:
    args = [f"{k}={v}" for k, v in {**SYNTH, "epochs": 5, "selector": "random", "fraction": 0.5, "kappa": 0.4,
                                    "select_every": 2, **settings, "out": out}.items()]
    return [sys.executable, "-m", "acs_core", "train", *args]


def _run_cli(out: Path, **settings: object) -> subprocess.Popen:
    return subprocess.Popen(_train_command(out, **settings), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_for_checkpoint(proc: subprocess.Popen, out: Path, epoch: int) -> None:
    """Return once `proc` has checkpointed `epoch` epochs (it holds the run folder's lock by then)."""
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        ckpt = out / "checkpoint.pt"
        if ckpt.exists() and torch.load(ckpt, weights_only=True)["state"]["epoch"] >= epoch:
            return
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint of epoch {epoch} in {out}: {proc.poll()=}")


def test_resume_after_kill_gives_identical_metrics(tmp_path):
    ref = _run_cli(tmp_path / "ref")
    assert ref.wait(timeout=300) == 0, ref.stderr.read()
    victim = _run_cli(tmp_path / "victim")
    _wait_for_checkpoint(victim, tmp_path / "victim", 3)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert not (tmp_path / "victim" / "metrics.json").exists()
    again = _run_cli(tmp_path / "victim")
    assert again.wait(timeout=300) == 0, again.stderr.read()
    a, b = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("ref", "victim"))
    assert a["final"] == b["final"]
    strip = lambda hist: [{k: v for k, v in h.items() if k not in ("seconds", "cpu_seconds")} for h in hist]  # noqa: E731
    assert strip(a["history"]) == strip(b["history"])
    assert a["compute"] == b["compute"]  # the checkpointed pass counts resume exactly (the killed epoch is redone)
    for sel in a["selections"]:
        ra, rb = (np.load(tmp_path / d / sel["file"]) for d in ("ref", "victim"))
        assert np.array_equal(ra["rows"], rb["rows"])


def test_second_process_on_the_same_out_is_refused(tmp_path):
    """Two `acs train` on one out=: the second (while the first, paused, holds the lock) exits 2 with one line and
    writes nothing; the first then finishes its run."""
    out, small = tmp_path / "run", {"epochs": 2, "train_size": 128, "eval_steps": 1}
    first = _run_cli(out, **small)
    _wait_for_checkpoint(first, out, 1)
    os.kill(first.pid, signal.SIGSTOP)
    try:
        before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
        second = subprocess.run(_train_command(out, **small), capture_output=True, text=True, timeout=300)
        after = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    finally:
        os.kill(first.pid, signal.SIGCONT)
    lines = second.stderr.strip().splitlines()
    assert second.returncode == 2 and len(lines) == 1 and f"pid {first.pid}" in lines[0], second.stderr
    assert lines[0].startswith(f"acs: error: out: {out} is being written by another process")
    assert before == after
    assert first.wait(timeout=300) == 0, first.stderr.read()
    record = json.loads((out / "metrics.json").read_text())
    assert record["status"] == "complete" and len(record["history"]) == 2 and not (out / "failed.json").exists()


class _Stop(Exception):
    """Stands for a kill between the last epoch's checkpoint and the final evaluation."""


def test_checkpoint_and_model_load_with_weights_only(tmp_path, monkeypatch):
    """checkpoint.pt and model.pt hold only tensors, numbers, strings, lists and dicts (torch.load(weights_only=True)),
    also when a selector reports numpy numbers; the run resumes from such a checkpoint."""
    select = train_mod.select_coreset

    def numpy_info(*args: object) -> Coreset:
        coreset = select(*args)
        return Coreset(coreset.indices, coreset.weights, {**coreset.info, "score": np.float64(0.5)})

    def stop(exp: object) -> None:
        raise _Stop

    cfg = RunConfig(**{**SYNTH, "epochs": 2, "train_size": 128}, selector="random", fraction=0.5, kappa=0.0,
                    out=str(tmp_path / "r"))
    with monkeypatch.context() as patch:
        patch.setattr(train_mod, "select_coreset", numpy_info)
        patch.setattr(train_mod, "final_evaluation", stop)
        with pytest.raises(_Stop):
            run(cfg)
    ckpt = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)
    assert ckpt["state"]["epoch"] == 2 and [s["score"] for s in ckpt["state"]["selections"]] == [0.5]
    record = run(cfg)  # resumes after the last epoch: only the final evaluation runs
    assert [s["score"] for s in record["selections"]] == [0.5]
    saved = torch.load(tmp_path / "r" / "model.pt", weights_only=True)
    assert saved["spec"] == record["model_spec"]


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


Layer = tuple[bool, torch.dtype, list[bool]]  # (in training?, output dtype, input and weight channels_last?)


def _channels_last(t: torch.Tensor) -> list[bool]:
    """[whether t is stored channels_last], or [] where the layout is ambiguous (not 4-d, one channel, 1x1)."""
    if t.dim() != 4 or t.shape[1] == 1 or t.shape[2] * t.shape[3] == 1:
        return []
    return [t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()]


def _layer_run(out: Path, **option: object) -> tuple[dict[str, torch.Tensor], list[Layer]]:
    """A one-epoch run whose convolutions and linear layers report every call; returns its model's weights and the calls."""
    calls: list[Layer] = []
    training = [False]

    def record(mod: torch.nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        calls.append((training[0], output.dtype, _channels_last(inputs[0]) + _channels_last(mod.weight)))

    epoch = train_mod.train_epoch

    def in_training(*args: object, **kwargs: object) -> dict[str, float]:
        training[0] = True
        try:
            return epoch(*args, **kwargs)
        finally:
            training[0] = False

    with pytest.MonkeyPatch.context() as monkeypatch:
        _spy_on_model(monkeypatch, lambda model: [m.register_forward_hook(record) for m in model.modules()
                                                  if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))])
        monkeypatch.setattr(train_mod, "train_epoch", in_training)
        run(RunConfig(**{**SYNTH, "epochs": 1, "train_size": 128}, **option, out=str(out)))
    return load_run(out)[0].state_dict(), calls


def _relative_change(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    keys = [k for k in a if a[k].is_floating_point()]
    return float(torch.cat([(a[k] - b[k]).flatten() for k in keys]).norm() / torch.cat([b[k].flatten() for k in keys]).norm())


@pytest.fixture(scope="module")
def default_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, torch.Tensor], list[Layer]]:
    """The fp32, default-layout run the AMP and channels_last runs are compared with."""
    return _layer_run(tmp_path_factory.mktemp("default") / "run")


def test_bf16_autocast_trains_in_bf16_and_evaluates_in_fp32(tmp_path, default_run):
    """amp=bf16: every convolution and linear layer of the training attack and update computes in bf16, validation and
    the final evaluation in fp32; the model differs from the fp32 run's but stays close to it."""
    weights, calls = _layer_run(tmp_path / "bf16", amp="bf16")
    assert {dtype for _, dtype, _ in default_run[1]} == {torch.float32}
    assert {dtype for train, dtype, _ in calls if train} == {torch.bfloat16}
    assert {dtype for train, dtype, _ in calls if not train} == {torch.float32}
    assert 0 < _relative_change(weights, default_run[0]) < 0.02  # measured: 0.0018


def test_channels_last_reaches_every_convolution(tmp_path, default_run):
    """channels_last=true: every convolution's weight and multi-channel input is channels_last, in training and in
    evaluation (the default layout has none); the model matches the default layout's up to rounding."""
    weights, calls = _layer_run(tmp_path / "cl", channels_last=True)
    assert not any(layout for _, _, layouts in default_run[1] for layout in layouts)
    layouts = [(train, layout) for train, _, found in calls for layout in found]
    assert {train for train, _ in layouts} == {True, False} and all(layout for _, layout in layouts)
    assert _relative_change(weights, default_run[0]) < 1e-5  # measured: 2e-8
