"""`acs bench train`: samples/s of the engine's adversarial training step against a plain torchattacks loop;
`acs bench evaluate`: seconds per 1,000 test images of each evaluation suite on a run's model.

The loops (the engine; with compile=true also the engine through torch.compile; the reference) run side by side in
one process on the same rows (already on the device), from the same initial weights, with the same optimiser
settings: one warm-up pass each, then `repeats` rounds of one pass per loop in turn; the median samples/s of each is
reported, with each loop's GFLOP/s (flops per sample from torch.utils.flop_counter on one batch) and its fraction of
the machine's matmul peak measured in the same run. This is a benchmark that prints figures, never a timed test.
"""
from __future__ import annotations

import copy
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .compile import CompiledModel, frozen
from .config import ConfigError, RunConfig
from .evaluate import evaluate_run
from .suites import SUITES
from .timing import PhaseTimer
from .runtime import make_optimizer
from .train import AmpFactory, Experiment, build_experiment, train_epoch


def _import_torchattacks() -> Any:
    """torchattacks (a benchmark/test-only dependency), or a one-line error saying how to install it."""
    try:
        import torchattacks
    except ImportError:
        raise ModuleNotFoundError(
            "acs bench train needs torchattacks for its reference loop: pip install --no-deps torchattacks") from None
    return torchattacks


def _sync(device: torch.device) -> None:
    """Wait for queued device work so that wall-clock readings cover it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(device: torch.device, fn: Callable[[], object]) -> float:
    """Seconds `fn()` takes, device work included."""
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def _reference_pass(model: nn.Module, opt: torch.optim.Optimizer, attack: Any, batches: list[tuple[torch.Tensor, torch.Tensor]],
                    amp: AmpFactory, scaler: torch.amp.GradScaler) -> None:
    """The plain PGD adversarial training loop a user would write with torchattacks, one pass over `batches`."""
    for x, y in batches:
        model.eval()
        with amp():
            x_adv = attack(x, y)
        model.train()
        with amp():
            loss = F.cross_entropy(model(x_adv), y)
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()


def matmul_peak(device: torch.device, dtype: torch.dtype = torch.float32, n: int = 2048, repeats: int = 5) -> float:
    """The machine's practical peak in GFLOP/s, measured now: the best of `repeats` n x n matmuls (2 n^3 flops each) in
    `dtype` on `device` at the current thread count, after one warm-up."""
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    _timed(device, lambda: a @ b)
    return 2 * n ** 3 / min(_timed(device, lambda: a @ b) for _ in range(repeats)) / 1e9


def flops_per_sample(model: nn.Module, steps: int, batch: tuple[torch.Tensor, torch.Tensor]) -> float:
    """Floating-point operations of one PGD training step per sample, counted by torch.utils.flop_counter on one batch
    of a copy of the model: `steps` attack steps (a forward pass and the input's gradient, eval mode, parameters frozen)
    and the update (a forward pass and every gradient, train mode) - the same math every loop of the benchmark does."""
    from torch.utils.flop_counter import FlopCounterMode

    twin, (x, y) = copy.deepcopy(model), batch

    def counted(fn: Callable[[], object]) -> int:
        with FlopCounterMode(display=False) as counter:
            fn()
        return counter.get_total_flops()

    def attack_step() -> None:
        F.cross_entropy(twin.eval()(x.clone().requires_grad_(True)), y).backward()

    with frozen(twin):
        step = counted(attack_step)
    update = counted(lambda: F.cross_entropy(twin.train()(x), y).backward())
    return (steps * step + update) / len(y)


def bench_train(cfg: RunConfig, batches: int, repeats: int) -> dict[str, Any]:
    """Median samples/s of PGD adversarial training (objective pgd_linf, cfg.attack_steps steps) of cfg.model on the
    first `batches * cfg.batch_size` training rows of cfg.dataset, for the engine (`train_epoch`, unit weights; with
    cfg.compile also the engine with torch.compile) and for a plain torchattacks reference loop; prints a table and
    returns the figures.

    Fairness: every loop sees the same rows, already on the device (the engine through a Split whose tensors live
    there, the reference as pre-scaled float batches), starts from the same weights, uses SGD with cfg's settings,
    cfg.amp and cfg.channels_last, and no augmentation; the reference loop is never compiled. One warm-up pass each
    (compilation included), then `repeats` rounds of one timed pass per loop in turn. Returns batch_size, samples,
    and per loop L in engine, engine_compiled (with cfg.compile), reference: L_samples_per_s, L_best_samples_per_s
    (the best run: less sensitive to other load on a shared machine) and, but for the reference, L_ratio (its median
    / the reference's); `compiled` says whether torch.compile really ran (False after a fallback to eager).
    """
    torchattacks = _import_torchattacks()
    if batches < 1:
        raise ConfigError(f"--batches: {batches} < 1; use --batches 1 or more")
    if repeats < 1:
        raise ConfigError(f"--repeats: {repeats} < 1; use --repeats 1 or more")
    if cfg.objective != "pgd_linf":
        raise ConfigError(f"objective: bench train compares l_inf PGD training only; use objective=pgd_linf, not {cfg.objective!r}")
    exp = build_experiment(dataclasses.replace(cfg, quiet=True, augment="none"))
    device, n = exp.device, batches * cfg.batch_size
    if n > len(exp.data.train):
        raise ConfigError(f"--batches: {batches} batches of {cfg.batch_size} need {n} training rows, "
                          f"{cfg.dataset} has {len(exp.data.train)}; use fewer batches or a smaller batch_size")
    # the benchmark rows, on the device once and shared by all loops
    exp.data.train = exp.data.train.subset(torch.arange(n)).to(device)
    rows = torch.arange(n, device=device)
    weights = torch.ones(n)
    ref_batches = []
    for start in range(0, n, cfg.batch_size):
        x, y = exp.data.train.batch(rows[start:start + cfg.batch_size], device)
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        ref_batches.append((x, y))
    # the same initial weights; the reference gets its own optimiser and scaler
    objective = exp.objective
    ref_model = copy.deepcopy(exp.model)
    ref_opt = make_optimizer(ref_model, cfg)
    ref_scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")
    attack = torchattacks.PGD(ref_model, eps=objective.eps, alpha=objective.alpha, steps=objective.steps, random_start=True)
    exp.model.train()
    ref_model.train()

    def engine(run: Experiment, desc: str) -> Callable[[], object]:
        return lambda: train_epoch(run, rows, weights, PhaseTimer(device), desc=desc)

    loops = {"engine": engine(dataclasses.replace(exp, train_model=exp.model), "bench engine")}
    if cfg.compile:  # the compiled engine trains the same model and optimiser as the eager one, in turn
        loops["engine_compiled"] = engine(exp, "bench engine compiled")
    loops["reference"] = lambda: _reference_pass(ref_model, ref_opt, attack, ref_batches, exp.amp, ref_scaler)
    for loop in loops.values():  # warm-up: allocator, kernel selection, caches, compilation
        _timed(device, loop)
    rates: dict[str, list[float]] = {name: [] for name in loops}
    for _ in range(repeats):
        for name, loop in loops.items():
            rates[name].append(n / _timed(device, loop))
    median = {name: statistics.median(r) for name, r in rates.items()}
    compiled = isinstance(exp.train_model, CompiledModel) and exp.train_model.compiled is not None
    flops = flops_per_sample(ref_model, objective.steps, ref_batches[0])
    peak = matmul_peak(device, {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp, torch.float32))

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    table = [
        ("device", f"{device} / {name}"), ("model", cfg.model), ("dataset", cfg.dataset),
        ("attack", f"pgd{objective.steps}_linf eps {objective.eps:.4g} alpha {objective.alpha:.4g}"),
        ("amp / channels_last / compile", f"{cfg.amp} / {cfg.channels_last} / {cfg.compile}"
                                          + ("" if compiled or not cfg.compile else " (failed: eager)")),
        ("batch size", str(cfg.batch_size)), ("samples per pass", f"{n} ({batches} batches), {repeats} timed passes each, median"),
    ]
    table += [(f"samples/s {loop}", f"{median[loop]:.1f}  (runs: {', '.join(f'{r:.1f}' for r in rates[loop])})") for loop in loops]
    table += [("flops per sample", f"{flops / 1e6:.1f} MFLOP (torch.utils.flop_counter, one batch)"),
              ("matmul peak", f"{peak:.1f} GFLOP/s (2048 x 2048 {cfg.amp if cfg.amp != 'none' else 'fp32'} matmul, "
                              "measured in this run)")]
    table += [(f"GFLOP/s {loop}", f"{median[loop] * flops / 1e9:.1f}  ({100 * median[loop] * flops / 1e9 / peak:.0f}% "
               "of the matmul peak)") for loop in loops]
    table += [(f"ratio {loop}/reference", f"{median[loop] / median['reference']:.3f}  (of the best runs: "
               f"{max(rates[loop]) / max(rates['reference']):.3f})") for loop in loops if loop != "reference"]
    width = max(len(k) for k, _ in table)
    for key, value in table:
        print(f"{key:<{width}}  {value}")
    figures: dict[str, Any] = {"batch_size": cfg.batch_size, "samples": n, "compiled": compiled,
                               "flops_per_sample": flops, "matmul_peak_gflops": peak}
    for loop in loops:
        figures[f"{loop}_samples_per_s"], figures[f"{loop}_best_samples_per_s"] = median[loop], max(rates[loop])
        figures[f"{loop}_gflops"] = median[loop] * flops / 1e9
        figures[f"{loop}_peak_fraction"] = figures[f"{loop}_gflops"] / peak
        if loop != "reference":
            figures[f"{loop}_ratio"] = median[loop] / median["reference"]
    return figures


def bench_evaluate(run_dir: str | Path, suites: list[str], test_size: int | None, batch_size: int | None,
                   device: str) -> dict[str, float]:
    """Seconds per 1,000 test images of each suite on a run's model, its attack-strength check (a fixed subset, timed
    apart) excluded (eval.json goes to a temporary folder, the run folder is untouched); prints one line per suite with
    its per-attack seconds and the check's seconds, and returns {suite: s/1000}."""
    for name in suites:
        SUITES.get(name)
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in suites:
            res = evaluate_run(run_dir, name, batch_size, device, test_size, out=Path(tmp) / f"{name}.json", quiet=True)
            n, check = res["test_samples"], res["strength_check"]
            figures[name] = 1000.0 * (res["seconds"] - (check["seconds"] if check else 0.0)) / n
            parts = ", ".join(f"{k} {1000.0 * a['seconds'] / n:.1f}" for k, a in res["attacks"].items())
            env = res["environment"]
            checked = f"; strength check {check['seconds']:.1f} s on {check['subset']} images" if check else ""
            print(f"{name:<8} {figures[name]:9.1f} s per 1,000 images  ({n} images, {env['device']}"
                  f"{'' if env['gpu'] is None else ' ' + env['gpu']}, {env['cpu_threads']} threads; attacks s/1000: {parts}; "
                  f"robust {res['robust_acc']:.2f}%{checked})", flush=True)
    return figures
