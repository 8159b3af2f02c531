"""`acs bench train`: samples/s of the engine's adversarial training step against a plain torchattacks loop.

Both loops run side by side in one process on the same rows (already on the device), from the same initial weights,
with the same optimiser settings: one warm-up pass each, then `repeats` alternating (engine, reference) passes; the
median samples/s of each is reported. This is a benchmark that prints figures, never a timed test.
"""
from __future__ import annotations

import copy
import dataclasses
import statistics
import time
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ConfigError, RunConfig
from .timing import PhaseTimer
from .train import AmpFactory, build_experiment, make_optimizer, train_epoch

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


def bench_train(cfg: RunConfig, batches: int, repeats: int) -> dict[str, float]:
    """Median samples/s of PGD adversarial training (objective pgd_linf, cfg.attack_steps steps) of cfg.model on the
    first `batches * cfg.batch_size` training rows of cfg.dataset, for the engine (`train_epoch`, unit weights) and
    for a plain torchattacks reference loop; prints a table and returns the figures.

    Fairness: both loops see the same rows, already on the device (the engine through a Split whose tensors live
    there, the reference as pre-scaled float batches), start from the same weights, use SGD with cfg's settings,
    cfg.amp and cfg.channels_last, and no augmentation. Returns batch_size, samples, engine_samples_per_s,
    reference_samples_per_s, ratio (engine / reference, of the medians) and the best run of each loop
    (engine_best_samples_per_s, reference_best_samples_per_s: less sensitive to other load on a shared machine).
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
    # the benchmark rows, on the device once and shared by both loops
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

    def engine() -> None:
        train_epoch(exp, rows, weights, PhaseTimer(device), desc="bench engine")

    def reference() -> None:
        _reference_pass(ref_model, ref_opt, attack, ref_batches, exp.amp, ref_scaler)

    _timed(device, engine)  # warm-up: allocator, kernels selection, caches
    _timed(device, reference)
    engine_rates, ref_rates = [], []
    for _ in range(repeats):
        engine_rates.append(n / _timed(device, engine))
        ref_rates.append(n / _timed(device, reference))
    engine_rate, ref_rate = statistics.median(engine_rates), statistics.median(ref_rates)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    table = [
        ("device", f"{device} / {name}"), ("model", cfg.model), ("dataset", cfg.dataset),
        ("attack", f"pgd{objective.steps}_linf eps {objective.eps:.4g} alpha {objective.alpha:.4g}"),
        ("amp / channels_last", f"{cfg.amp} / {cfg.channels_last}"),
        ("batch size", str(cfg.batch_size)), ("samples per pass", f"{n} ({batches} batches), {repeats} timed passes each, median"),
        ("samples/s engine", f"{engine_rate:.1f}  (runs: {', '.join(f'{r:.1f}' for r in engine_rates)})"),
        ("samples/s reference", f"{ref_rate:.1f}  (runs: {', '.join(f'{r:.1f}' for r in ref_rates)})"),
        ("ratio engine/reference", f"{engine_rate / ref_rate:.3f}  (of the best runs: {max(engine_rates) / max(ref_rates):.3f})"),
    ]
    width = max(len(k) for k, _ in table)
    for key, value in table:
        print(f"{key:<{width}}  {value}")
    return {"batch_size": float(cfg.batch_size), "samples": float(n), "engine_samples_per_s": engine_rate,
            "reference_samples_per_s": ref_rate, "ratio": engine_rate / ref_rate,
            "engine_best_samples_per_s": max(engine_rates), "reference_best_samples_per_s": max(ref_rates)}
