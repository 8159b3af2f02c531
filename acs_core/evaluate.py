"""The robustness evaluation suite behind `acs evaluate RUN_DIR` (always eval mode and fp32): it attacks a finished
run's model and writes RUN_DIR/eval.json.

eval.json (schema_version 1): the suite, the run's config hash, the test-split size, the run's norm and eps, the
clean accuracy, every attack of the suite at the run's eps (accuracy, label, norm, eps, alpha, steps, restarts, seconds),
`robust_acc` = the per-example worst case over clean and every attack (the reported number) and `robust_attack`, the
attacks behind it as tables name them (e.g. APGD-CE+APGD-DLR+PGD-20), `groups` (suites whose attacks carry a group,
e.g. perceptual's seen / unseen: each group's attacks, mean accuracy and worst case), accuracy-vs-eps `curves`, the
`strength_check` (APGD-CE + APGD-DLR on a fixed stratified subset, or on the whole split from the suite's own attacks
when the suite runs it, see strength_verdict; null for a perceptual run or a check of 0 images), `sanity` checks with `possible_gradient_masking`, the evaluation's seconds and its environment.
Accuracies are percentages of the test split, each attack's over all samples (misclassified ones included).
"""
from __future__ import annotations

import math
import pickle
import time
from contextlib import AbstractContextManager, contextmanager
from fractions import Fraction
from itertools import accumulate
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn as nn

from .attacks import Attack
from .compile import evaluation_model, frozen
from .autoattack import AA_ITERATIONS, NORMS, collected_warnings
from .config import ConfigError, RunConfig
from .data import Split, load_data, stratified_indices
from .metrics import correct_mask, pct
from .objectives import build_objective
from .records import SCHEMA_VERSION, RunFolderError, load_run, write_json
from .runtime import environment, epoch_seed, resolve_device
from .suites import APGD, APGD_CE, PGD20, SUITES, SWEEP_SCALES, AttackSpec, Suite
from .summary import EVAL

ORDER_TOL = 1.0  # percentage points (or one test sample, if more) an attack order or a curve may be violated by
PGD_GAP_TOL = 3.0  # percentage points (or one sample) by which PGD-20 and the stronger PGD (e.g. PGD-50 x 10) may differ
AA_GAP_TOL = 10.0  # percentage points (or one sample) AutoAttack may fall below the strongest PGD of the same threat model
KIND_ORDER = ("fgsm", "pgd", "autoattack")  # weakest to strongest: accuracy must not increase along this order
STRENGTH_MARGIN = 3.0  # percentage points by which APGD-CE+DLR may lower the suite's robust accuracy (strength_verdict)
STRENGTH_ALPHA = 0.05  # the one-sided level of the strength check's binomial test
STRENGTH_SEED = 0  # the strength check's subset: the same images for every run on the same test split


@contextmanager
def tf32(allowed: bool) -> Iterator[None]:
    """CUDA's TF32 matmuls and convolutions allowed or not inside the block; the previous settings come back
    afterwards, also on an error."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = allowed
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def fp32() -> AbstractContextManager[None]:
    """Full float32 matmuls and convolutions (no TF32 on CUDA, which would weaken the attacks' gradients and shift
    accuracies)."""
    return tf32(False)


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
                  test_samples: int, autoattack_warnings: list[str] | None = None,
                  strength: dict[str, Any] | None = None) -> dict[str, Any]:
    """The gradient-masking checks, every one recorded. Among the attacks of one threat model (norm, eps):
    clean >= FGSM >= PGD >= AutoAttack for each pair of consecutive kinds present (tolerance ORDER_TOL points),
    every PGD within PGD_GAP_TOL points of PGD-20, AutoAttack within AA_GAP_TOL points below the strongest PGD (far
    below: the gradient attacks are being fooled); accuracy non-increasing in eps on every curve (ORDER_TOL);
    AutoAttack's own checks silent; the attack-strength check (`strength`, strength_verdict's record) not flagged.
    Every tolerance is at least one sample, and the comparisons are exact, in samples of the test_samples (>= 1) ones.
    Any failed check sets possible_gradient_masking (gradient masking, or an attack too weak for the model). `attacks`
    maps names to eval.json entries (acc, kind, norm, eps, steps, restarts)."""

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
    if strength is not None:
        checks.append(_check(f"strength check: {strength['reference']} on {strength['subset']} images", not strength["flagged"],
                             f"lowers the robust accuracy by {strength['gap']:.2f} points (flagged from "
                             f"{strength['threshold']:.2f}; p = {strength['p_value']:.3g})"))
    return {"checks": checks, "possible_gradient_masking": not all(c["ok"] for c in checks)}


# ---------------------------------------------------------------- the attack-strength check

def strength_rows(test: Split, size: int) -> torch.Tensor:
    """The strength check's images: `size` of the test split (all, if it is smaller), stratified by class and drawn
    with STRENGTH_SEED, so that every run evaluated on the same test split is checked on the same images."""
    return stratified_indices(test.y, min(size, len(test)), torch.Generator().manual_seed(STRENGTH_SEED))


def binomial_tails(n: int, p: float) -> list[float]:
    """tails[k] = P(X >= k) for X ~ Binomial(n, p), k = 0 .. n + 1 (the probabilities summed in log space, from the
    top, so that no term underflows into a wrong total for large n)."""
    log_pmf = [math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * math.log(p) + (n - k) * math.log1p(-p)
               for k in range(n + 1)]
    return list(accumulate(math.exp(v) for v in reversed(log_pmf)))[::-1] + [0.0]


def strength_verdict(subset: int, suite_robust: int, fooled: int) -> dict[str, Any]:
    """The attack-strength check's record for a subset of `subset` images of which `suite_robust` survive the suite and
    `fooled` of those fall to the reference attack (APGD-CE + APGD-DLR): the suite's robust accuracy on the subset, the
    combined (suite + reference, per-example worst case) one, their `gap` in points, and `flagged` when the gap is at
    least `threshold`.

    Why this threshold. Each image of the subset either falls to the reference after surviving the suite or not, so
    the number fooled is Binomial(subset, g), g the share of the test distribution on which the suite overstates
    robustness; the gap needs no assumption about the accuracy itself. A sound attack still overstates a little: on
    issue 19's three default-grid checkpoints PGD-20 and PGD-50x3 agreed within 0.4 points while APGD-CE+DLR lowered
    them by 1.8-3.8 (mean 3). A gap is evidence of a weak attack or of gradient masking only beyond that,
    STRENGTH_MARGIN (3 points): the check is the exact one-sided binomial test of H0 g <= 3%, flagged when
    P(Binomial(subset, 0.03) >= fooled) <= STRENGTH_ALPHA (5%), i.e. when the gap reaches `threshold`, the smallest
    such count in points: 7 points on 100 images, 5.5 on 200, 4.6 on 500 (close to "2 points + one binomial standard
    error of a 50% accuracy", 7.0 / 5.5 / 4.2, but exact in image counts and independent of the accuracy). A suite
    that overstates by at most 3 points is flagged at most 5% of the time; masked gradients (gaps of tens of points)
    are flagged on 20 images or more (15 points). `p_value` is the tail probability at the observed gap. Gaps below
    the threshold are recorded all the same; the `apgd` suite measures them on the whole split."""
    tails = binomial_tails(subset, STRENGTH_MARGIN / 100)
    first = next(k for k, tail in enumerate(tails) if tail <= STRENGTH_ALPHA)
    return {"subset": subset, "suite_robust_acc": 100.0 * suite_robust / subset,
            "combined_robust_acc": 100.0 * (suite_robust - fooled) / subset, "gap": 100.0 * fooled / subset,
            "threshold": 100.0 * first / subset, "p_value": tails[fooled], "flagged": fooled >= first}


# ---------------------------------------------------------------- the suite

def _attack_entry(spec: AttackSpec, norm: str, eps: float, acc: float, seconds: float) -> dict[str, Any]:
    return {"acc": acc, "label": spec.label(norm), "norm": norm, "eps": eps, "alpha": spec.alpha(norm, eps),
            "steps": AA_ITERATIONS if spec.kind == "autoattack" else spec.steps, "restarts": spec.restarts,
            "seconds": seconds, "kind": spec.kind}


@fp32()
def evaluate_model(model: nn.Module, test: Split, suite: Suite, norm: str, eps: float, base_eps: dict[str, float],
                   device: torch.device, batch_size: int, seed: int, fgsm_eps: list[float] | None = None,
                   quiet: bool = False, strength_subset: int | None = None, compile: bool = False) -> dict[str, Any]:
    """_run_suite on `model` in eval mode, fp32, its parameters frozen for the evaluation (every backward computes the
    input's gradient only) and, with `compile`, through torch.compile (eager where it cannot compile)."""
    model = model.to(device).float().eval()
    with frozen(model):
        return _run_suite(evaluation_model(model, compile), test, suite, norm, eps, base_eps, device, batch_size, seed,
                          fgsm_eps, quiet, strength_subset)


def _run_suite(model: nn.Module, test: Split, suite: Suite, norm: str, eps: float, base_eps: dict[str, float],
               device: torch.device, batch_size: int, seed: int, fgsm_eps: list[float] | None = None,
               quiet: bool = False, strength_subset: int | None = None) -> dict[str, Any]:
    """Run `suite` on `model` over `test`: clean accuracy, every attack at (norm, eps), their
    per-example worst case, the FGSM sweep (l_inf; at `fgsm_eps`, else the suite's grid of SWEEP_SCALES x
    base_eps["linf"]), the PGD-20 curves at SWEEP_SCALES x base_eps[norm], the attack-strength check on
    `strength_subset` images (default: the suite's; 0: none; a suite that runs the reference attack itself, e.g.
    `apgd`, is checked on the whole split from its own attacks, at no extra cost) and the sanity checks. Every attack, the strength check
    and every curve point start from torch.manual_seed(seed)."""
    t_start = time.perf_counter()

    def mask(attack: Attack | None, label: str, split: Split = test) -> tuple[torch.Tensor, float]:
        torch.manual_seed(seed)
        return _timed(device, lambda: correct_mask(model, split, device, batch_size, attack, None if quiet else label))

    # every attack is built before any runs, so that an attack that does not fit the run fails at once
    built = [(spec, *spec.threat(norm, eps, base_eps)) for spec in suite.attacks]
    built = [(spec, n, e, spec.build(n, e, seed, batch_size)) for spec, n, e in built]
    size = suite.strength_subset if strength_subset is None else strength_subset
    checked = bool(size) and norm in NORMS  # APGD has no perceptual threat model
    reference = APGD if len(test.y.unique()) >= 3 else APGD_CE
    in_suite = checked and reference in suite.attacks  # the suite runs the reference itself: no second run
    reference_attack = reference.build(norm, eps, seed, batch_size) if checked and not in_suite else None
    clean, _ = mask(None, "clean")
    worst = clean.clone()
    without_reference = clean.clone()  # the worst case over the suite's other attacks
    attacks: dict[str, dict[str, Any]] = {}
    uses_autoattack = any(spec.kind == "autoattack" for spec in suite.attacks)
    group_worst: dict[str, torch.Tensor] = {}
    with collected_warnings() as aa_warnings:
        for spec, spec_norm, spec_eps, attack in built:
            name = spec.name(spec_norm)
            correct, seconds = mask(attack, name)
            worst &= correct
            if spec != reference:
                without_reference &= correct
            attacks[name] = {**_attack_entry(spec, spec_norm, spec_eps, pct(correct), seconds), "group": spec.group}
            if spec.group is not None:
                group_worst[spec.group] = group_worst.get(spec.group, clean) & correct

    def curve(spec: AttackSpec, curve_norm: str, eps_values: list[float]) -> list[dict[str, float]]:
        points = []
        for e in sorted(set(eps_values)):
            correct = clean if e == 0 else mask(spec.build(curve_norm, e, seed, batch_size), f"{spec.name(curve_norm)} eps {e:.4g}")[0]
            points.append({"eps": e, "acc": pct(correct)})
        return points

    curves: dict[str, list[dict[str, float]]] = {}
    sweep = fgsm_eps if fgsm_eps is not None else [s * base_eps["linf"] for s in SWEEP_SCALES] if suite.fgsm_sweep else []
    if sweep:
        curves["fgsm_linf"] = curve(AttackSpec("fgsm"), "linf", sweep)
    for curve_norm in suite.curves:
        curves[f"pgd_{curve_norm}"] = curve(PGD20, curve_norm, [s * base_eps[curve_norm] for s in SWEEP_SCALES])

    strength = None
    if in_suite:  # the whole split, from the masks already computed
        fooled = int((without_reference & ~worst).sum())
        strength = {"reference": reference.label(norm), **strength_verdict(len(test), int(without_reference.sum()), fooled),
                    "seconds": 0.0, "autoattack_warnings": aa_warnings, "in_suite": True}
    elif checked:
        rows = strength_rows(test, size)
        survivors = rows[worst[rows]]
        with collected_warnings() as reference_warnings:
            still, seconds = mask(reference_attack, f"strength check ({reference.label(norm)})", test.subset(survivors))
        strength = {"reference": reference.label(norm), **strength_verdict(len(rows), len(survivors), int((~still).sum())),
                    "seconds": seconds, "autoattack_warnings": reference_warnings, "in_suite": False}

    n = len(test)
    return {
        "test_samples": n, "norm": norm, "eps": eps, "clean_acc": pct(clean), "attacks": attacks,
        "robust_acc": pct(worst), "robust_attack": suite.label(norm), "groups": _group_summary(attacks, group_worst),
        "curves": curves, "strength_check": strength,
        "sanity": sanity_checks(pct(clean), attacks, curves, n, aa_warnings if uses_autoattack else None, strength),
        "seconds": time.perf_counter() - t_start,
    }


def _group_summary(attacks: dict[str, dict[str, Any]], group_worst: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Per attack group (seen / unseen, as the PAT paper's Table 2): its attacks, the mean of their accuracies
    (`avg`) and the per-example worst case over clean and all of them (`robust_acc`)."""
    out = {}
    for group, worst in group_worst.items():
        names = [n for n, a in attacks.items() if a["group"] == group]
        out[group] = {"attacks": names, "avg": sum(attacks[n]["acc"] for n in names) / len(names), "robust_acc": pct(worst)}
    return out


# ---------------------------------------------------------------- a run folder

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
                 quiet: bool = False, strength_subset: int | None = None, compile: bool | None = None) -> dict[str, Any]:
    """Evaluate a finished run's model with `suite` on the test split rebuilt from its recorded config (test_size
    overrides the config's stratified subset size, 0 = all), and write the result atomically to `out` (default
    RUN_DIR/eval.json). batch_size defaults to the run's eval_batch_size; strength_subset (the attack-strength check's
    images, 0 = no check) to the suite's; compile (torch.compile the attacked model) to the run's own `compile`.
    Bad input raises before anything is written.
    The seed is the one of the run's final evaluation, so `quick` reproduces metrics.json's PGD-20 on the CPU."""
    chosen = SUITES.get(suite)
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"--batch-size: {batch_size} < 1; use 1 or more")
    if test_size is not None and test_size < 0:
        raise ConfigError(f"--test-size: {test_size} is negative; use 0 for the whole test split")
    if strength_subset is not None and strength_subset < 0:
        raise ConfigError(f"--strength-subset: {strength_subset} is negative; use 0 for no attack-strength check")
    if fgsm_eps is not None and (not fgsm_eps or any(e < 0 for e in fgsm_eps)):
        raise ConfigError(f"--fgsm-eps: {fgsm_eps} must be a non-empty list of eps >= 0")
    dev = resolve_device(device, "--device")
    run_dir = Path(run_dir)
    model, record = _load(run_dir, dev)
    overrides = {} if test_size is None else {"test_size": test_size}
    cfg = RunConfig.from_dict({**record["config"], **overrides})
    data = load_data(cfg)
    objective = build_objective(cfg, data.spec)
    base_eps = {"linf": data.spec.eps_linf, "l2": data.spec.eps_l2, "perceptual": data.spec.eps_perceptual,
                objective.norm: objective.eps}
    result = evaluate_model(model, data.test, chosen, objective.norm, objective.eps, base_eps, dev,
                            batch_size or cfg.eval_batch_size, epoch_seed(cfg.seed, cfg.epochs), fgsm_eps, quiet,
                            strength_subset, cfg.compile if compile is None else compile)
    result = {"schema_version": SCHEMA_VERSION, "suite": suite, "run_config_hash": record["config_hash"],
              "compile": cfg.compile if compile is None else compile, **result,
              "environment": environment(dev)}
    write_json(Path(out) if out is not None else run_dir / EVAL, result)
    return result
