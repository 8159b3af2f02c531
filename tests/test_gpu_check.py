"""The GPU acceptance script at its tiny CPU size (so it cannot rot without a GPU), and the option it measures,
compile=true: the training model through torch.compile, eager after a failure to compile, untouched when off."""
from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch._dynamo.testing import CompileCounterWithBackend

from acs_core.bench import bench_train
from acs_core.compile import CompiledModel
from acs_core.config import RunConfig
from acs_core.data import DATASETS
from acs_core.models import build_model
from acs_core.timing import PhaseTimer
from acs_core.train import build_experiment

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"


def _gpu_check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO, capture_output=True, text=True, timeout=900,
                          check=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the tiny CPU size; on a GPU run the script itself")
def test_gpu_check_runs_every_step_at_the_tiny_cpu_size(tmp_path):
    """Without CUDA the script trains, evaluates and benchmarks on CIFAR-shaped data on the CPU at its tiny size (the
    small CNN; the torch.compile variant left out: its first compilation takes minutes on a CPU) and writes its JSON."""
    out = tmp_path / "check"
    res = _gpu_check("--out", str(out), "--no-compile")
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    result = json.loads((out / "gpu_check.json").read_text())
    assert (result["size"], result["measured_on_gpu"], result["ok"]) == ("tiny", False, True)
    assert result["environment"]["device"] == "cpu" and "gpu" not in result["environment"]
    assert [c["name"] for c in result["checks"]] == ["run complete on the device", "finite training loss",
                                                     "coreset of the fraction", "evaluation attacks recorded",
                                                     "throughput figures positive"]
    assert result["train"]["selection"]["size"] == round(0.3 * 60)
    assert set(result["evaluate"]["attacks"]) and 0 <= result["evaluate"]["robust_acc"] <= result["evaluate"]["clean_acc"]
    fp32, bf16 = result["throughput"]["fp32"], result["throughput"]["bf16_channels_last"]
    assert fp32["engine_samples_per_s"] > 0 and fp32["reference_samples_per_s"] > 0 and bf16["engine_ratio"] > 0
    assert "engine_compiled_samples_per_s" not in bf16
    record = json.loads((out / "run" / "metrics.json").read_text())
    assert (record["config"]["dataset"], record["config"]["model"], record["config"]["selector"]) == (
        "synthetic_cifar", "small_cnn", "craig")
    assert (out / "run" / "eval.json").exists() and "gpu_check on cpu" in res.stdout


def test_gpu_check_refuses_a_used_folder(tmp_path):
    (tmp_path / "old.txt").write_text("an earlier check")
    res = _gpu_check("--out", str(tmp_path))
    assert res.returncode == 1
    assert res.stderr.strip() == f"gpu_check: --out: {tmp_path} is not a new or empty folder; choose another --out"
    assert [p.name for p in tmp_path.iterdir()] == ["old.txt"]


def test_synthetic_cifar_is_cifar_shaped_and_leaves_synthetic_unchanged():
    spec = DATASETS.get("synthetic_cifar")
    train, test = spec.load(None, False)
    assert (train.x.shape, test.x.shape, spec.shape, spec.augment) == ((10_000, 3, 32, 32), (2_000, 3, 32, 32),
                                                                       (3, 32, 32), "crop_flip")
    assert train.x.dtype == torch.uint8 and set(train.y.tolist()) == set(range(10))
    grey, _ = DATASETS.get("synthetic").load(None, False)
    assert grey.x.shape == (2000, 1, 16, 16) and int(grey.x.long().sum()) == 65_717_033  # the set as it always was


# ---------------------------------------------------------------- compile=true


class _Net(nn.Module):
    """A small BatchNorm network with a method of its own, as the objectives call (features, logits_and_maps)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU())
        self.head = nn.Linear(16, 3)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@pytest.fixture
def aot_eager(monkeypatch):
    """torch.compile through AOTAutograd without code generation: the compiled autograd graphs, in seconds."""
    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn: real(fn, backend="aot_eager"))


def test_compile_off_trains_the_model_itself():
    """compile=false (the default) calls the very model: results stay bit-identical to before the option."""
    exp = build_experiment(RunConfig(dataset="synthetic", train_size=100, val_size=20, test_size=20))
    assert exp.train_model is exp.model and not exp.cfg.compile


def test_compiled_model_matches_eager_and_attacks_without_weight_gradients(aot_eager):
    torch.manual_seed(0)
    net, x, y = _Net(), torch.randn(32, 8), torch.arange(32) % 3
    twin, compiled = copy.deepcopy(net), CompiledModel(net)
    net.eval()  # a training attack: the input's gradient only, the parameters untouched and trainable after it
    xa = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(compiled(xa).logsumexp(1).sum(), xa)
    xe = x.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(twin.eval()(xe).logsumexp(1).sum(), xe)
    assert torch.allclose(grad, expected, atol=1e-6)
    assert all(p.requires_grad and p.grad is None for p in net.parameters())
    assert torch.allclose(compiled.features(x), twin.features(x))  # the model's own methods, through the wrapper
    net.train(), twin.train()  # an update: the weight gradients and BatchNorm statistics of eager mode
    F.cross_entropy(compiled(x), y).backward()
    F.cross_entropy(twin(x), y).backward()
    for (name, p), q in zip(net.named_parameters(), twin.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-6), name
    assert torch.allclose(net.body[1].running_mean, twin.body[1].running_mean)
    assert compiled.compiled is not None


def test_a_compiled_classifier_is_one_graph_per_mode_and_counts_the_eager_passes(monkeypatch):
    """The pass counter is told outside the compiled code: one graph per BatchNorm mode (no break at the features),
    and the same forward and backward sample-passes as the eager model in an attack step and an update."""
    real, graphs = torch.compile, CompileCounterWithBackend("aot_eager")
    monkeypatch.setattr(torch, "compile", lambda fn: real(fn, backend=graphs))
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = build_model("small_cnn", in_channels=1, num_classes=10, mean=(0.5,), std=(0.25,))
    twin, (eager, compiled) = copy.deepcopy(model), (PhaseTimer(torch.device("cpu")) for _ in range(2))
    eager.watch(twin)
    compiled.watch(model)
    wrapped, x, y = CompiledModel(model), torch.rand(8, 1, 28, 28), torch.arange(8)
    for net, timer in ((twin, eager), (wrapped, compiled)):
        with timer("attack"):
            model.eval(), twin.eval()
            xa = x.clone().requires_grad_(True)
            torch.autograd.grad(F.cross_entropy(net(xa), y), xa)
        with timer("update"):
            model.train(), twin.train()
            F.cross_entropy(net(x), y).backward()
    assert compiled.passes == eager.passes == {"attack": {"forward": 8, "backward": 8}, "update": {"forward": 8, "backward": 8}}
    assert graphs.frame_count == 2, graphs.frame_count  # eval (frozen) and train: no graph break, no recompile


def test_a_failure_to_compile_is_one_warning_and_training_goes_on_eagerly(monkeypatch, capsys):
    def broken(gm: torch.fx.GraphModule, example_inputs: list) -> None:
        raise RuntimeError("no working C++ compiler")

    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn: real(fn, backend=broken))
    torch.manual_seed(0)
    net, x = _Net().eval(), torch.randn(4, 8)
    compiled = CompiledModel(net)
    assert torch.equal(compiled(x), net(x)) and torch.equal(compiled(x), net(x))
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("acs: warning: compile: torch.compile failed (") and \
        "no working C++ compiler" in err and err.rstrip().endswith("training continues without it"), err
    assert compiled.compiled is None


def test_bench_train_times_the_compiled_engine_side_by_side(aot_eager, capsys):
    cfg = RunConfig(dataset="synthetic", train_size=64, val_size=20, batch_size=16, attack_steps=1, compile=True)
    figures = bench_train(cfg, batches=1, repeats=1)
    assert figures["compiled"] is True
    assert all(figures[f"{loop}_samples_per_s"] > 0 for loop in ("engine", "engine_compiled", "reference"))
    assert figures["engine_compiled_ratio"] == figures["engine_compiled_samples_per_s"] / figures["reference_samples_per_s"]
    out = capsys.readouterr().out
    assert "samples/s engine_compiled" in out and "ratio engine_compiled/reference" in out
    # each loop's GFLOP/s from the counted flops per sample, and its fraction of the matmul peak measured in the run
    assert figures["flops_per_sample"] > 0 and figures["matmul_peak_gflops"] > 0
    for loop in ("engine", "engine_compiled", "reference"):
        gflops = figures[f"{loop}_samples_per_s"] * figures["flops_per_sample"] / 1e9
        assert figures[f"{loop}_gflops"] == pytest.approx(gflops)
        assert figures[f"{loop}_peak_fraction"] == pytest.approx(gflops / figures["matmul_peak_gflops"])
    assert "GFLOP/s engine_compiled" in out and "of the matmul peak" in out and "matmul peak" in out


_CACHE_PROBE = """
import json, sys
import torch
from torch._dynamo.utils import counters
from acs_core.compile import CompiledModel
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)).eval()
x = torch.randn(4, 8, requires_grad=True)
CompiledModel(net, "probe")(x).sum().backward()
print(json.dumps(dict(counters["inductor"])))
"""


def test_a_second_process_reads_the_compile_cache(tmp_path):
    """Two processes compile the same model with Inductor (the real backend: a C++ build) under the
    TORCHINDUCTOR_CACHE_DIR the workflow sets for its jobs: the first fills the folder, the second hits its FX graph
    cache instead of compiling again."""
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "compile-cache")}
    runs = [subprocess.run([sys.executable, "-c", _CACHE_PROBE], capture_output=True, text=True, env=env, timeout=600)
            for _ in range(2)]
    for proc in runs:
        assert proc.returncode == 0, proc.stderr[-2000:]
        if "torch.compile failed" in proc.stderr:
            pytest.skip(f"this machine cannot compile: {proc.stderr.strip()}")
    first, second = (json.loads(proc.stdout.strip().splitlines()[-1]) for proc in runs)
    assert first.get("fxgraph_cache_miss", 0) >= 1 and not first.get("fxgraph_cache_hit")
    assert second.get("fxgraph_cache_hit", 0) >= 1 and not second.get("fxgraph_cache_miss")
    assert any((tmp_path / "compile-cache").rglob("*"))
