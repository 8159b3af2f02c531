"""Accuracy of a model on a split, clean or under an attack (always eval mode and fp32), and the robustness
evaluation suite behind `acs evaluate RUN_DIR`, which attacks a finished run's model and writes RUN_DIR/eval.json.

eval.json (schema_version 1): the suite, the run's config hash, the test-split size, the run's norm and eps, the
clean accuracy, every attack of the suite at the run's eps (accuracy, norm, eps, alpha, steps, restarts, seconds),
`robust_acc` = the per-example worst case over clean and every attack (the reported number), `groups` (suites whose
attacks carry a group, e.g. perceptual's seen / unseen: each group's attacks, mean accuracy and worst case), accuracy-vs-eps
`curves`, `sanity` checks with `possible_gradient_masking`, the evaluation's seconds and its environment.
Accuracies are percentages of the test split, each attack's over all samples (misclassified ones included).
"""
from __future__ import annotations

import pickle
import tempfile
import time
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn as nn
from tqdm import tqdm

from .attacks import Attack
from .autoattack import AA_ITERATIONS, collected_warnings
from .config import ConfigError, RunConfig
from .data import Split, load_data
from .objectives import build_objective
from .records import SCHEMA_VERSION, RunFolderError, load_run, write_json
from .suites import PGD20, SUITES, SWEEP_SCALES, AttackSpec, Suite

EVAL_FILE = "eval.json"
ORDER_TOL = 1.0  # percentage points (or one test sample, if more) an attack order or a curve may be violated by
PGD_GAP_TOL = 3.0  # percentage points (or one sample) by which PGD-20 and the stronger PGD (e.g. PGD-50 x 10) may differ
AA_GAP_TOL = 10.0  # percentage points (or one sample) AutoAttack may fall below the strongest PGD of the same threat model
KIND_ORDER = ("fgsm", "pgd", "autoattack")  # weakest to strongest: accuracy must not increase along this order


def correct_mask(model: nn.Module, split: Split, device: torch.device, batch_size: int, attack: Attack | None = None,
                 progress: str | None = None) -> torch.Tensor:
    """Per-example correctness (bool, on the CPU) on `split`, at attack(model, x, y) when an attack is given; a
    progress bar named `progress` when given."""
    was_training = model.training
    model.eval()
    out = []
    for start in tqdm(range(0, len(split), batch_size), desc=progress, disable=progress is None, leave=False, unit="batch"):
        x, y = split.batch(torch.arange(start, min(start + batch_size, len(split))), device)
        if attack is not None:
            x = attack(model, x, y)
        with torch.no_grad():
            out.append((model(x).argmax(1) == y).cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool)


def accuracy(model: nn.Module, split: Split, device: torch.device, batch_size: int, attack: Attack | None = None) -> float:
    """Percentage of `split` classified correctly (under `attack` if given)."""
    mask = correct_mask(model, split, device, batch_size, attack)
    return _pct(mask)


def _pct(mask: torch.Tensor) -> float:
    """Percentage of True in `mask`, from exact counts (a float32 mean would record 30.000001 for 3 of 10)."""
    return 100.0 * int(mask.sum()) / len(mask) if len(mask) else float("nan")


@contextmanager
def fp32() -> Iterator[None]:
    """Full float32 matmuls and convolutions inside the block (no TF32 on CUDA, which would weaken the attacks'
    gradients and shift accuracies); the previous settings come back afterwards, also on an error."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _timed(device: torch.device, fn: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, float]:
    """fn()'s result and the seconds it took, device work included."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return result, time.perf_counter() - t0


def parse_eps_list(text: str) -> list[float]:
    """'0,2/255,0.1' -> [0.0, 0.00784..., 0.1]; a bad or negative item raises ConfigError naming --fgsm-eps."""
    try:
        values = [float(Fraction(item.strip())) for item in text.split(",")]
    except (ValueError, ZeroDivisionError):
        raise ConfigError(f"--fgsm-eps: {text!r} is not a comma-separated list of numbers; use e.g. 0,2/255,8/255") from None
    if any(v < 0 for v in values):
        raise ConfigError(f"--fgsm-eps: {text!r} has a negative eps; use values >= 0")
    return values


# ---------------------------------------------------------------- sanity checks

def _check(name: str, ok: bool, detail: str) -> dict[str, Any]:
    return {"name": name, "ok": bool(ok), "detail": detail}


def sanity_checks(clean_acc: float, attacks: dict[str, dict[str, Any]], curves: dict[str, list[dict[str, float]]],
                  test_samples: int, autoattack_warnings: list[str] | None = None) -> dict[str, Any]:
    """The gradient-masking checks, every one recorded. Among the attacks of one threat model (norm, eps):
    clean >= FGSM >= PGD >= AutoAttack for each pair of consecutive kinds present (tolerance ORDER_TOL points),
    every PGD within PGD_GAP_TOL points of PGD-20, AutoAttack within AA_GAP_TOL points below the strongest PGD (far
    below: the gradient attacks are being fooled); accuracy non-increasing in eps on every curve (ORDER_TOL);
    AutoAttack's own checks silent. Every tolerance is at least one sample, and the comparisons are exact, in samples
    of the test_samples (>= 1) ones. Any failed check sets possible_gradient_masking. `attacks` maps names to
    eval.json entries (acc, kind, norm, eps, steps, restarts)."""

    def samples(acc: float) -> int:
        return round(acc * test_samples / 100)  # the accuracies are 100 * samples / test_samples

    def tol(points: float) -> float:
        return max(points, 100.0 / test_samples)

    def within(excess: int, points: float) -> bool:
        """`excess` samples are at most `points` percentage points, or one sample if that is more."""
        return 100 * excess <= max(points * test_samples, 100)

    checks = []
    threats = sorted({(a["norm"], a["eps"]) for a in attacks.values() if a["kind"] in KIND_ORDER}, key=str)
    for threat in threats:
        same = {n: a for n, a in attacks.items() if (a["norm"], a["eps"]) == threat}
        levels = [[("clean", clean_acc)]] + [[(n, a["acc"]) for n, a in same.items() if a["kind"] == kind] for kind in KIND_ORDER]
        levels = [level for level in levels if level]
        checks += [_check(f"{a} >= {b}", within(samples(acc_b) - samples(acc_a), ORDER_TOL),
                          f"{acc_a:.2f} vs {acc_b:.2f} (tolerance {tol(ORDER_TOL):.2f})")
                   for upper, lower in zip(levels, levels[1:]) for a, acc_a in upper for b, acc_b in lower]
        pgd = {n: a for n, a in same.items() if a["kind"] == "pgd"}
        for b in [n for n, a in pgd.items() if a["steps"] == PGD20.steps and a["restarts"] == 1]:
            for n in [n for n in pgd if n != b]:
                gap = pgd[b]["acc"] - pgd[n]["acc"]
                ok = within(abs(samples(pgd[b]["acc"]) - samples(pgd[n]["acc"])), PGD_GAP_TOL)
                checks.append(_check(f"{n} ~ {b}", ok,
                                     f"{b} - {n} = {gap:.2f} points (tolerance {tol(PGD_GAP_TOL):.2f})"))
        if pgd:
            strongest = min(pgd, key=lambda n: pgd[n]["acc"])
            for n in [n for n, a in same.items() if a["kind"] == "autoattack"]:
                gap = pgd[strongest]["acc"] - same[n]["acc"]
                ok = within(samples(pgd[strongest]["acc"]) - samples(same[n]["acc"]), AA_GAP_TOL)
                checks.append(_check(f"{n} ~ {strongest}", ok,
                                     f"{strongest} - {n} = {gap:.2f} points (tolerance {tol(AA_GAP_TOL):.2f})"))
    for name, points in curves.items():
        rises = [(p["eps"], q["eps"], q["acc"] - p["acc"]) for p, q in zip(points, points[1:])
                 if not within(samples(q["acc"]) - samples(p["acc"]), ORDER_TOL)]
        detail = "; ".join(f"+{d:.2f} points from eps {e0:.4g} to {e1:.4g}" for e0, e1, d in rises) or f"non-increasing (tolerance {tol(ORDER_TOL):.2f})"
        checks.append(_check(f"{name} non-increasing in eps", not rises, detail))
    if autoattack_warnings is not None:
        checks.append(_check("autoattack self-checks", not autoattack_warnings, " | ".join(autoattack_warnings) or "no warnings"))
    return {"checks": checks, "possible_gradient_masking": not all(c["ok"] for c in checks)}


# ---------------------------------------------------------------- the suite

def _attack_entry(spec: AttackSpec, norm: str, eps: float, acc: float, seconds: float) -> dict[str, Any]:
    return {"acc": acc, "norm": norm, "eps": eps, "alpha": spec.alpha(norm, eps),
            "steps": AA_ITERATIONS if spec.kind == "autoattack" else spec.steps, "restarts": spec.restarts,
            "seconds": seconds, "kind": spec.kind}


@fp32()
def evaluate_model(model: nn.Module, test: Split, suite: Suite, norm: str, eps: float, base_eps: dict[str, float],
                   device: torch.device, batch_size: int, seed: int, fgsm_eps: list[float] | None = None,
                   quiet: bool = False) -> dict[str, Any]:
    """Run `suite` on `model` (eval mode, fp32) over `test`: clean accuracy, every attack at (norm, eps), their
    per-example worst case, the FGSM sweep (l_inf; at `fgsm_eps`, else the suite's grid of SWEEP_SCALES x
    base_eps["linf"]), the PGD-20 curves at SWEEP_SCALES x base_eps[norm], and the sanity checks. Every attack and
    every curve point starts from torch.manual_seed(seed)."""
    t_start = time.perf_counter()
    model = model.to(device).float().eval()

    def mask(attack: Attack | None, label: str) -> tuple[torch.Tensor, float]:
        torch.manual_seed(seed)
        return _timed(device, lambda: correct_mask(model, test, device, batch_size, attack, None if quiet else label))

    # every attack is built before any runs, so that an attack that does not fit the run fails at once
    built = [(spec, *spec.threat(norm, eps, base_eps)) for spec in suite.attacks]
    built = [(spec, n, e, spec.build(n, e, seed, batch_size)) for spec, n, e in built]
    clean, _ = mask(None, "clean")
    worst = clean.clone()
    attacks: dict[str, dict[str, Any]] = {}
    uses_autoattack = any(spec.kind == "autoattack" for spec in suite.attacks)
    group_worst: dict[str, torch.Tensor] = {}
    with collected_warnings() as aa_warnings:
        for spec, spec_norm, spec_eps, attack in built:
            name = spec.name(spec_norm)
            correct, seconds = mask(attack, name)
            worst &= correct
            attacks[name] = {**_attack_entry(spec, spec_norm, spec_eps, _pct(correct), seconds), "group": spec.group}
            if spec.group is not None:
                group_worst[spec.group] = group_worst.get(spec.group, clean) & correct

    def curve(spec: AttackSpec, curve_norm: str, eps_values: list[float]) -> list[dict[str, float]]:
        points = []
        for e in sorted(set(eps_values)):
            correct = clean if e == 0 else mask(spec.build(curve_norm, e, seed, batch_size), f"{spec.name(curve_norm)} eps {e:.4g}")[0]
            points.append({"eps": e, "acc": _pct(correct)})
        return points

    curves: dict[str, list[dict[str, float]]] = {}
    sweep = fgsm_eps if fgsm_eps is not None else [s * base_eps["linf"] for s in SWEEP_SCALES] if suite.fgsm_sweep else []
    if sweep:
        curves["fgsm_linf"] = curve(AttackSpec("fgsm"), "linf", sweep)
    for curve_norm in suite.curves:
        curves[f"pgd_{curve_norm}"] = curve(PGD20, curve_norm, [s * base_eps[curve_norm] for s in SWEEP_SCALES])

    n = len(test)
    return {
        "test_samples": n, "norm": norm, "eps": eps, "clean_acc": _pct(clean),
        "attacks": attacks, "robust_acc": _pct(worst), "groups": _group_summary(attacks, group_worst), "curves": curves,
        "sanity": sanity_checks(_pct(clean), attacks, curves, n, aa_warnings if uses_autoattack else None),
        "seconds": time.perf_counter() - t_start,
    }


def _group_summary(attacks: dict[str, dict[str, Any]], group_worst: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Per attack group (seen / unseen, as the PAT paper's Table 2): its attacks, the mean of their accuracies
    (`avg`) and the per-example worst case over clean and all of them (`robust_acc`)."""
    out = {}
    for group, worst in group_worst.items():
        names = [n for n, a in attacks.items() if a["group"] == group]
        out[group] = {"attacks": names, "avg": sum(attacks[n]["acc"] for n in names) / len(names), "robust_acc": _pct(worst)}
    return out


# ---------------------------------------------------------------- a run folder

def resolve_eval_device(name: str) -> torch.device:
    """auto (CUDA when present) | cpu | cuda | cuda:N; a GPU asked for but absent is a ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device: {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device: {name!r}; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device: {name} asked for, but no GPU is visible; use auto or cpu")
    return device


def _load(run_dir: Path, device: torch.device) -> tuple[nn.Module, dict[str, Any]]:
    """load_run, with every unreadable checkpoint (also a non-pickle file) as a one-line RunFolderError."""
    try:
        model, record = load_run(run_dir, device)
    except pickle.UnpicklingError as err:
        raise RunFolderError(f"{run_dir / 'model.pt'}: corrupt checkpoint ({err.__class__.__name__}); rerun the training") from None
    if not isinstance(record.get("config"), dict) or "config_hash" not in record:
        raise RunFolderError(f"{run_dir / 'metrics.json'}: no config or config_hash; rerun the training with this acs_core")
    return model, record


def evaluate_run(run_dir: str | Path, suite: str = "quick", batch_size: int | None = None, device: str = "auto",
                 test_size: int | None = None, fgsm_eps: list[float] | None = None, out: str | Path | None = None,
                 quiet: bool = False) -> dict[str, Any]:
    """Evaluate a finished run's model with `suite` on the test split rebuilt from its recorded config (test_size
    overrides the config's stratified subset size, 0 = all), and write the result atomically to `out` (default
    RUN_DIR/eval.json). batch_size defaults to the run's eval_batch_size. Bad input raises before anything is written.
    The seed is the one of the run's final evaluation, so `quick` reproduces metrics.json's PGD-20 on the CPU."""
    from .train import environment, epoch_seed

    chosen = SUITES.get(suite)
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"--batch-size: {batch_size} < 1; use 1 or more")
    if test_size is not None and test_size < 0:
        raise ConfigError(f"--test-size: {test_size} is negative; use 0 for the whole test split")
    if fgsm_eps is not None and (not fgsm_eps or any(e < 0 for e in fgsm_eps)):
        raise ConfigError(f"--fgsm-eps: {fgsm_eps} must be a non-empty list of eps >= 0")
    dev = resolve_eval_device(device)
    run_dir = Path(run_dir)
    model, record = _load(run_dir, dev)
    overrides = {} if test_size is None else {"test_size": test_size}
    cfg = RunConfig.from_dict({**record["config"], **overrides})
    data = load_data(cfg)
    objective = build_objective(cfg, data.spec)
    base_eps = {"linf": data.spec.eps_linf, "l2": data.spec.eps_l2, "perceptual": data.spec.eps_perceptual,
                objective.norm: objective.eps}
    result = evaluate_model(model, data.test, chosen, objective.norm, objective.eps, base_eps, dev,
                            batch_size or cfg.eval_batch_size, epoch_seed(cfg.seed, cfg.epochs), fgsm_eps, quiet)
    result = {"schema_version": SCHEMA_VERSION, "suite": suite, "run_config_hash": record["config_hash"], **result,
              "environment": {**environment(dev), "cpu_threads": torch.get_num_threads()}}
    write_json(Path(out) if out is not None else run_dir / EVAL_FILE, result)
    return result


def bench_evaluate(run_dir: str | Path, suites: list[str], test_size: int | None, batch_size: int | None,
                   device: str) -> dict[str, float]:
    """Seconds per 1,000 test images of each suite on a run's model (eval.json goes to a temporary folder, the run
    folder is untouched); prints one line per suite with its per-attack seconds and returns {suite: s/1000}."""
    for name in suites:
        SUITES.get(name)
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in suites:
            res = evaluate_run(run_dir, name, batch_size, device, test_size, out=Path(tmp) / f"{name}.json", quiet=True)
            n = res["test_samples"]
            figures[name] = 1000.0 * res["seconds"] / n
            parts = ", ".join(f"{k} {1000.0 * a['seconds'] / n:.1f}" for k, a in res["attacks"].items())
            env = res["environment"]
            print(f"{name:<8} {figures[name]:9.1f} s per 1,000 images  ({n} images, {env['device']}"
                  f"{'' if env['gpu'] is None else ' ' + env['gpu']}, {env['cpu_threads']} threads; attacks s/1000: {parts}; "
                  f"robust {res['robust_acc']:.2f}%)", flush=True)
    return figures
