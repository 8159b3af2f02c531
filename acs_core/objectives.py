"""Training objectives: each is its attack + its per-sample loss on the head's logits + its adversarial points.

The loss is written as a function of the logits of the clean and/or adversarial inputs (`head_loss`), so that the
training loss and the closed-form last-layer gradients that selectors use come from the same formula and no
selector ever special-cases an objective.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import attacks, perceptual
from .config import RunConfig
from .data import DataSpec
from .registry import Registry


@dataclass
class Objective:
    """Base: vanilla training. `norm` is the threat model used for its default eps and its quick evaluation."""

    eps: float
    alpha: float
    steps: int
    uses_clean: bool = True
    uses_adv: bool = False
    norm: str = "linf"
    chunk: int = 0  # attack_chunk: adversarial() attacks chunks of this many samples (0: the whole batch)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The training attack's adversarial points (the caller puts the model in eval mode)."""
        return x

    def adversarial(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """perturb() on chunks of `chunk` samples: each sample's attack ascends its own loss (summed losses, eval mode),
        so chunking changes the speed and at most how a random start is drawn (smaller chunks ran faster per sample
        on one CPU thread)."""
        if not self.chunk or len(x) <= self.chunk:
            return self.perturb(model, x, y)
        return torch.cat([self.perturb(model, xc, yc) for xc, yc in zip(x.split(self.chunk), y.split(self.chunk))])

    def with_steps(self, steps: int) -> "Objective":
        """The same objective with a `steps`-step attack of the same total step length alpha * steps (so that fewer
        steps still reach the boundary): a cheaper attack for coreset selection (selector.attack_steps)."""
        return replace(self, steps=steps, alpha=self.alpha * self.steps / steps) if self.steps else self

    def head_loss(self, z_clean: torch.Tensor | None, z_adv: torch.Tensor | None, y: torch.Tensor) -> torch.Tensor:
        """Per-sample loss (N,) from clean and adversarial logits."""
        assert z_clean is not None
        return F.cross_entropy(z_clean, y, reduction="none")

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample training loss (N,) and the logits it is judged on (adversarial if used), with only the forward
        passes this objective needs."""
        z_clean = model(x) if self.uses_clean else None
        z_adv = model(x_adv) if self.uses_adv else None
        logits = z_adv if z_adv is not None else z_clean
        assert logits is not None
        return self.head_loss(z_clean, z_adv, y), logits

    def eval_attack(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> torch.Tensor:
        """The quick robust evaluation attack of this threat model: CE PGD with `steps` steps."""
        if self.norm == "l2":
            return attacks.pgd_l2(model, x, y, self.eps, 2.5 * self.eps / steps, steps)
        return attacks.pgd_linf(model, x, y, self.eps, self.eps / 4, steps)


OBJECTIVES: Registry[type[Objective]] = Registry("objective")
OBJECTIVES.register("vanilla", "standard training: CE(f(x), y), no attack")(Objective)


@OBJECTIVES.register("fgsm_rs", "fast adversarial training: FGSM from a uniform random start, step 1.25*eps (Wong et al.)")
@dataclass
class FGSMRS(Objective):
    uses_clean: bool = False
    uses_adv: bool = True

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return attacks.fgsm(model, x, y, self.eps, self.alpha, random_start=True)

    def head_loss(self, z_clean: torch.Tensor | None, z_adv: torch.Tensor | None, y: torch.Tensor) -> torch.Tensor:
        assert z_adv is not None
        return F.cross_entropy(z_adv, y, reduction="none")


@OBJECTIVES.register("pgd_linf", "l_inf PGD adversarial training (Madry et al.): CE at PGD-K points, random start")
@dataclass
class PGDLinf(FGSMRS):
    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return attacks.pgd_linf(model, x, y, self.eps, self.alpha, self.steps)


@OBJECTIVES.register("pgd_l2", "l_2 PGD adversarial training: CE at l_2 PGD-K points (eps in pixel units)")
@dataclass
class PGDL2(FGSMRS):
    norm: str = "l2"

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return attacks.pgd_l2(model, x, y, self.eps, self.alpha, self.steps)


@OBJECTIVES.register("trades", "TRADES: CE(f(x),y) + beta*KL(f(x)||f(x')), KL attack in eval mode, f(x) not detached")
@dataclass
class Trades(Objective):
    beta: float = 6.0
    uses_clean: bool = True
    uses_adv: bool = True

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return attacks.trades_kl(model, x, self.eps, self.alpha, self.steps)

    def head_loss(self, z_clean: torch.Tensor | None, z_adv: torch.Tensor | None, y: torch.Tensor) -> torch.Tensor:
        assert z_clean is not None and z_adv is not None
        kl = F.kl_div(F.log_softmax(z_adv, dim=1), F.softmax(z_clean, dim=1), reduction="none").sum(1)
        return F.cross_entropy(z_clean, y, reduction="none") + self.beta * kl


@OBJECTIVES.register("pat", "perceptual adversarial training (Laidlaw et al.): CE at self-bounded Fast-LPA points, eps = "
                     "the perceptual bound, attack_steps its iterations")
@dataclass
class PAT(FGSMRS):
    """Self-bounded PAT: Fast-LPA with the classifier's own perceptual distance, only on correctly classified samples
    (the PAT recipe's --only_attack_correct; the others train at their clean point), CE at the adversarial logits."""

    norm: str = "perceptual"

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return perceptual.attack_correct_only(model, x, y, partial(perceptual.fast_lpa, bound=self.eps, steps=self.steps))

    def eval_attack(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> torch.Tensor:
        """The quick robust evaluation of the perceptual threat model: PPGD with `steps` steps at the bound."""
        return perceptual.ppgd(model, x, y, self.eps, steps)


def weighted_mean(losses: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum(gamma * l) / sum(gamma): the coreset loss; with unit weights it is the ordinary mean."""
    return (weights * losses.float()).sum() / weights.sum()


def _default_alpha(name: str, eps: float, steps: int) -> float:
    """Step-size conventions: FGSM-RS 1.25*eps, PGD l_inf eps/4 (2/255 at 8/255), l_2 2.5*eps/K, TRADES 0.007/0.031*eps."""
    return {"fgsm_rs": 1.25 * eps, "pgd_l2": 2.5 * eps / steps, "trades": eps * 0.007 / 0.031}.get(name, eps / 4)


def build_objective(cfg: RunConfig, data: DataSpec) -> Objective:
    """The configured objective with eps/alpha resolved from the data set's conventions where not given."""
    cls = OBJECTIVES.get(cfg.objective)
    norm = cls.__dataclass_fields__["norm"].default
    eps = cfg.eps if cfg.eps is not None else {"l2": data.eps_l2, "perceptual": data.eps_perceptual}.get(norm, data.eps_linf)
    alpha = cfg.alpha if cfg.alpha is not None else _default_alpha(cfg.objective, eps, cfg.attack_steps)
    extra = {"beta": cfg.beta} if "beta" in cls.__dataclass_fields__ else {}
    return cls(eps=eps, alpha=alpha, steps=cfg.attack_steps, chunk=cfg.attack_chunk, **extra)
