"""Evaluation suites by name: the attacks run at the run's own norm and eps, plus optional accuracy-vs-eps sweeps, and
the reference attack of every evaluation's attack-strength check (APGD-CE + APGD-DLR).

A new suite is one `SUITES.register(...)` line; a new kind of attack is one builder in `ATTACK_KINDS`.

Step sizes: `step_ratio` is alpha / eps. The ACS evaluation's step 2/255 at eps 8/255 is step_ratio 1/4, so on a data
set whose eps is 0.1 (Fashion-MNIST) the step is 0.025; the same ratio is used for l_2, except in `paper_l2`, whose step
is the reference's fixed 2/255 in pixel units (eps/4 would be 0.125 at SVHN's 0.5). Without a ratio the training
conventions apply (l_inf eps/4, l_2 2.5*eps/steps), which makes `quick`'s PGD-20 the attack of metrics.json's `final`.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

from . import attacks, perceptual
from .attacks import Attack
from .autoattack import autoattack, import_autoattack
from .config import ConfigError
from .registry import Registry

# accuracy-vs-eps grids, as multiples of the base eps of each norm (the run's eps for its own norm, else the data
# set's default eps for the other norm)
SWEEP_SCALES = (0.0, 0.125, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
NORM_LABELS = {"linf": "l_inf", "l2": "l_2"}
KIND_LABELS = {"fgsm": "FGSM", "pgd": "PGD", "ppgd": "PPGD", "lpa": "LPA", "flow": "Flow", "rotation": "Rotation"}
AA_COMPONENT_LABELS = {"apgd-ce": "APGD-CE", "apgd-dlr": "APGD-DLR", "apgd-t": "APGD-T", "fab": "FAB", "fab-t": "FAB-T",
                       "square": "Square"}


@dataclass(frozen=True)
class AttackSpec:
    """One attack of a suite; eps and norm come from the run."""

    kind: str                          # a key of ATTACK_KINDS: fgsm | pgd | autoattack
    steps: int = 1
    restarts: int = 1                  # > 1: rerun on the samples no earlier run fooled (attacks.with_restarts)
    step_ratio: float | None = None    # alpha / eps; None: the training conventions (see the module docstring)
    step: float | None = None          # a fixed alpha in pixel units (the reference's l_2 evaluation: 2/255), over step_ratio
    early_stop: bool = False           # update only still-correct samples (attacks.pgd_early_stop)
    version: str = "standard"          # AutoAttack version
    components: tuple[str, ...] = ()   # AutoAttack components when version == "custom"
    norm: str | None = None            # a fixed threat model instead of the run's (eps: base_eps[norm] unless `eps`)
    eps: float | None = None           # a fixed radius of that threat model
    group: str | None = None           # seen / unseen: eval.json reports each group's average and worst case

    def threat(self, norm: str, eps: float, base_eps: dict[str, float]) -> tuple[str, float]:
        """(norm, eps) this attack runs at: the run's, or its fixed threat model at its own or the base eps."""
        if self.norm is None:
            return norm, eps
        return self.norm, self.eps if self.eps is not None else (eps if self.norm == norm else base_eps[self.norm])

    def name(self, norm: str) -> str:
        """The key in eval.json: fgsm_linf, pgd20_linf, pgd50x10_l2, autoattack_standard, ..."""
        if self.kind == "autoattack":
            return f"autoattack_{self.version}" + "".join(f"_{c}" for c in self.components) + (f"_{norm}" if self.norm else "")
        if self.kind == "fgsm":
            return f"fgsm_{norm}"
        if self.kind in NON_LP_KINDS:
            return f"{self.kind}{self.steps}_{norm}" if self.kind in ("ppgd", "lpa") else self.kind
        return f"pgd{self.steps}{f'x{self.restarts}' if self.restarts > 1 else ''}_{norm}"

    def label(self, norm: str) -> str:
        """The attack at threat model `norm` as tables name it: FGSM, PGD-20, PGD-50x10, AutoAttack, APGD-CE+APGD-DLR,
        PPGD-10 (also PGD in a pat run's perceptual threat model), Rotation, ...; a fixed l_p threat model adds its norm
        (PGD-20 l_inf)."""
        if self.kind == "autoattack":
            base = ("+".join(AA_COMPONENT_LABELS[c] for c in self.components) if self.version == "custom"
                    else "AutoAttack" + ("" if self.version == "standard" else f" {self.version}"))
        else:
            kind = "ppgd" if self.kind == "pgd" and norm == "perceptual" else self.kind
            base = KIND_LABELS[kind] + ("" if kind in ("fgsm", "rotation") else f"-{self.steps}")
            base += f"x{self.restarts}" if self.restarts > 1 else ""
        return base + (f" {NORM_LABELS[self.norm]}" if self.norm in NORM_LABELS else "")

    def alpha(self, norm: str, eps: float) -> float | None:
        """The step size at `eps` (FGSM: one step of eps; AutoAttack: none, it adapts its own)."""
        if self.kind in ("autoattack", "rotation"):
            return None
        if self.kind in ("fgsm", "lpa"):  # LPA: its first step, decaying to eps/10
            return eps
        if self.kind == "ppgd" or norm == "perceptual":
            return 2 * eps / self.steps
        if self.step is not None:
            return self.step
        if self.step_ratio is not None:
            return self.step_ratio * eps
        return eps / 4 if norm == "linf" else 2.5 * eps / self.steps

    def build(self, norm: str, eps: float, seed: int, batch_size: int) -> Attack:
        """The attack as a function (model, x, y) -> x_adv."""
        single = ATTACK_KINDS[self.kind](self, norm, eps, seed, batch_size)
        if self.restarts == 1:
            return single
        return lambda model, x, y: attacks.with_restarts(model, x, y, single, self.restarts)


def _lp_only(kind: str, norm: str) -> None:
    if norm not in ("linf", "l2"):
        raise ConfigError(f"--suite: {kind} needs an l_inf or l_2 run, this run's threat model is {norm}; "
                          "use --suite perceptual (or quick)")


def _fgsm(spec: AttackSpec, norm: str, eps: float, seed: int, batch_size: int) -> Attack:
    """l_inf: FGSM (one signed step of eps); l_2: the fast gradient method (one normalised step of eps)."""
    _lp_only("fgsm", norm)
    if norm == "linf":
        return partial(attacks.fgsm, eps=eps)
    return partial(attacks.pgd_l2, eps=eps, alpha=eps, steps=1, random_start=False)


def _pgd(spec: AttackSpec, norm: str, eps: float, seed: int, batch_size: int) -> Attack:
    if norm == "perceptual":  # PGD in the perceptual threat model (a pat run's own) is perceptual PGD
        return _ppgd(spec, norm, eps, seed, batch_size)
    alpha = spec.alpha(norm, eps)
    if spec.early_stop:
        return partial(attacks.pgd_early_stop, eps=eps, alpha=alpha, steps=spec.steps, norm=norm)
    plain = attacks.pgd_linf if norm == "linf" else attacks.pgd_l2
    return partial(plain, eps=eps, alpha=alpha, steps=spec.steps)


def _autoattack(spec: AttackSpec, norm: str, eps: float, seed: int, batch_size: int) -> Attack:
    """AutoAttack on the device of the batches it is given; pyautoattack is checked here, when the suite is built, so
    that a missing package fails before any attack runs."""
    _lp_only("autoattack", norm)
    import_autoattack()
    return lambda model, x, y: autoattack(model, x, y, eps, norm, seed, batch_size, x.device, spec.version, spec.components)


def _ppgd(spec: AttackSpec, norm: str, eps: float, seed: int, batch_size: int) -> Attack:
    return partial(perceptual.ppgd, bound=eps, steps=spec.steps)


def _lpa(spec: AttackSpec, norm: str, eps: float, seed: int, batch_size: int) -> Attack:
    return partial(perceptual.lpa, bound=eps, steps=spec.steps)


def _flow(spec: AttackSpec, norm: str, eps: float, seed: int, batch_size: int) -> Attack:
    return partial(perceptual.spatial_flow, bound=eps, steps=spec.steps)


def _rotation(spec: AttackSpec, norm: str, eps: float, seed: int, batch_size: int) -> Attack:
    """eps = the largest rotation in degrees; shifts up to 10% of the image size (Engstrom et al.'s grid attack)."""
    return partial(perceptual.rotation_translation, max_angle=eps)


NON_LP_KINDS = ("ppgd", "lpa", "flow", "rotation")
ATTACK_KINDS: dict[str, Callable[[AttackSpec, str, float, int, int], Attack]] = {
    "fgsm": _fgsm, "pgd": _pgd, "autoattack": _autoattack,
    "ppgd": _ppgd, "lpa": _lpa, "flow": _flow, "rotation": _rotation}


@dataclass(frozen=True)
class Suite:
    """Attacks at the run's norm and eps (their per-example worst case is the suite's robust accuracy), plus sweeps:
    an l_inf FGSM sweep and PGD-20 accuracy-vs-eps curves for the listed norms, both over SWEEP_SCALES; and the size
    of the test subset its attack-strength check runs on (evaluate.strength_verdict)."""

    attacks: tuple[AttackSpec, ...]
    fgsm_sweep: bool = False
    curves: tuple[str, ...] = ()
    strength_subset: int = 200

    def label(self, norm: str) -> str:
        """The attacks behind the suite's robust accuracy on a run of threat model `norm`, as tables name them: PGD-20,
        APGD-CE+APGD-DLR+PGD-20, ... (clean: no attack)."""
        return "+".join(spec.label(spec.norm or norm) for spec in self.attacks) or "clean"


PGD20 = AttackSpec("pgd", steps=20)  # also the attack of the PGD accuracy-vs-eps curves
PAPER_PGD = AttackSpec("pgd", steps=50, restarts=10, step_ratio=0.25, early_stop=True)
PAPER_TRADES_PGD = AttackSpec("pgd", steps=50, restarts=20, step_ratio=0.765 / 8, early_stop=True)
PAPER_L2_PGD = AttackSpec("pgd", steps=50, restarts=10, step=2 / 255, early_stop=True)  # robust_train_l2.py: step 2/255
APGD = AttackSpec("autoattack", version="custom", components=("apgd-ce", "apgd-dlr"))  # 100 iterations, 1 restart each
APGD_CE = AttackSpec("autoattack", version="custom", components=("apgd-ce",))  # the DLR loss needs 3 or more classes

SUITES: Registry[Suite] = Registry("suite")
# quick's strength check runs on 100 images, not 200: on 200 it cost more than quick's own PGD-20 on a 500-image split
SUITES.register("quick", "clean + PGD-20 at the run's norm and eps, step as in training (the attack of metrics.json)")(
    Suite((PGD20,), strength_subset=100))
SUITES.register("paper", "clean + PGD-50 x 10 restarts, step eps/4 (2/255 at 8/255), only still-correct samples updated")(
    Suite((PAPER_PGD,)))
SUITES.register("paper_trades", "the ACS evaluation of TRADES runs: PGD-50 x 20 restarts, step 0.765/255 at 8/255")(
    Suite((PAPER_TRADES_PGD,)))
SUITES.register("apgd", "APGD-CE + APGD-DLR (pyautoattack, 100 iterations, 1 restart each) + PGD-20 at the run's norm and eps")(
    Suite((APGD, PGD20)))
SUITES.register("paper_l2", "the ACS evaluation of l_2 runs (SVHN): PGD-50 x 10 restarts, step 2/255 in pixel units")(
    Suite((PAPER_L2_PGD,)))
# apgd plus the paper's own attack, recorded on its own for comparison with the published numbers
SUITES.register("paper_apgd", "apgd + paper's PGD-50 x 10 (robust_acc: the worst case of all three)")(
    Suite((APGD, PGD20, PAPER_PGD)))
SUITES.register("paper_trades_apgd", "apgd + paper_trades' PGD-50 x 20 (robust_acc: the worst case of all three)")(
    Suite((APGD, PGD20, PAPER_TRADES_PGD)))
SUITES.register("paper_l2_apgd", "apgd + paper_l2's PGD-50 x 10 (robust_acc: the worst case of all three)")(
    Suite((APGD, PGD20, PAPER_L2_PGD)))
SUITES.register("full", "paper + FGSM + PGD-20 + AutoAttack standard, FGSM sweep, PGD-20 curves for l_inf and l_2")(
    Suite((AttackSpec("fgsm"), PGD20, PAPER_PGD, AttackSpec("autoattack")), fgsm_sweep=True, curves=("linf", "l2")))

# The PAT paper's Table 2 layout: seen = the perceptual attacks at the self bound (the run's bound for pat, else the
# data set's eps_perceptual), unseen = l_inf and l_2 PGD at the data set's eps, a spatial flow and rotation-translation.
PERCEPTUAL_SEEN = (AttackSpec("ppgd", steps=10, norm="perceptual", group="seen"),
                   AttackSpec("lpa", steps=10, norm="perceptual", group="seen"))
PERCEPTUAL_UNSEEN = (AttackSpec("pgd", steps=20, norm="linf", group="unseen"),
                     AttackSpec("pgd", steps=20, norm="l2", group="unseen"),
                     AttackSpec("flow", steps=20, norm="flow", eps=0.05, group="unseen"),
                     AttackSpec("rotation", norm="rotation", eps=30.0, group="unseen"))
SUITES.register("perceptual", "PAT's evaluation, CPU-sized: seen PPGD-10, LPA-10 (x5 penalty rounds) at the self bound; "
                "unseen PGD-20 l_inf and l_2, flow-20 (0.05), rotation <= 30 deg + shift <= 10%; per-group avg and worst case")(
    Suite(PERCEPTUAL_SEEN + PERCEPTUAL_UNSEEN))
SUITES.register("perceptual_paper", "PAT's evaluation at the paper's strength: seen PPGD-40, LPA-40; unseen AutoAttack "
                "l_inf and l_2, flow-100, rotation-translation")(
    Suite((AttackSpec("ppgd", steps=40, norm="perceptual", group="seen"),
           AttackSpec("lpa", steps=40, norm="perceptual", group="seen"),
           AttackSpec("autoattack", norm="linf", group="unseen"), AttackSpec("autoattack", norm="l2", group="unseen"),
           AttackSpec("flow", steps=100, norm="flow", eps=0.05, group="unseen"),
           AttackSpec("rotation", norm="rotation", eps=30.0, group="unseen"))))
