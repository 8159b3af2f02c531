"""The candidates as a selector sees them at its view, computed in one chunked pass: features, logits and last-layer
gradients at clean or adversarial points.

view=clean: the original methods - penultimate features, logits and plain-CE last-layer gradients at the clean
images. view=adversarial: the same quantities at the run objective's own adversarial points
x~ = objective.adversarial(model, x, y) (the un-augmented image; the caller sets the model's BatchNorm mode: eval by
default, so selection never updates BatchNorm statistics; train under attack_bn=train, as the reference), with the last-layer gradients of the objective's own loss
(`gradients.head_gradient_rows`: for TRADES the clean and the adversarial term), kept factored. Timer phases:
selection_attack (x~), selection_features (forward passes), selection_gradients (the logit gradients).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F

from ..data import Split
from ..models import Classifier
from ..objectives import Objective
from ..timing import PhaseTimer
from .gradients import OnFeatures, head_gradient_rows
from .rows import FactoredGradients

VIEWS = ("clean", "adversarial")
VANILLA = Objective(eps=0.0, alpha=0.0, steps=0)  # plain CE at clean points: the loss of view=clean


def view_objective(objective: Objective, view: str) -> Objective:
    """The loss a view differentiates: plain CE for clean, the run's objective for adversarial."""
    return VANILLA if view == "clean" else objective


@dataclass
class Outputs:
    """Candidates' penultimate features and logits at the view's points, labels, and optionally the view's
    last-layer gradients (factored); `clean` holds the clean features when the view's loss also needs them (TRADES)."""

    features: torch.Tensor
    logits: torch.Tensor
    labels: torch.Tensor
    clean: torch.Tensor | None = None
    adversarial: torch.Tensor | None = None
    gradients: FactoredGradients | None = None

    @property
    def log_probs(self) -> torch.Tensor:
        return F.log_softmax(self.logits.float(), dim=1)


def view_chunks(model: Classifier, objective: Objective, split: Split, view: str, device: torch.device,
                batch_size: int, timer: PhaseTimer) -> Iterator[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]]:
    """(x, x_adv or None, y) for consecutive chunks of `split`; x_adv = the objective's attack for view=adversarial."""
    for rows in torch.arange(len(split)).split(batch_size):
        x, y = split.batch(rows, device)
        x_adv = None
        if view == "adversarial":
            with timer("selection_attack"):
                x_adv = objective.adversarial(model, x, y).detach()
        yield x, x_adv, y


def outputs_at_view(model: Classifier, objective: Objective, split: Split, view: str, device: torch.device,
                    batch_size: int, timer: PhaseTimer, gradients: bool = False) -> Outputs:
    """Features, logits (and last-layer gradients) of every row of `split` at the view, in chunks of batch_size."""
    loss = view_objective(objective, view)
    need_clean = view == "clean" or (gradients and loss.uses_clean)
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("features", "logits", "labels", "clean", "adversarial")}
    rows: list[FactoredGradients] = []
    for x, x_adv, y in view_chunks(model, objective, split, view, device, batch_size, timer):
        with timer("selection_features"), torch.no_grad():
            h_clean = model.features(x) if need_clean else None
            h_adv = model.features(x_adv) if x_adv is not None else None
            h = h_adv if h_adv is not None else h_clean
            assert h is not None
            parts["features"].append(h)
            parts["logits"].append(model.head(h))
        parts["labels"].append(y)
        if h_clean is not None:
            parts["clean"].append(h_clean)
        if h_adv is not None:
            parts["adversarial"].append(h_adv)
        if gradients:
            with timer("selection_gradients"):
                rows.append(head_gradient_rows(OnFeatures(model.head), loss, h_clean, y, h_adv))  # type: ignore[arg-type]
    return Outputs(**{k: torch.cat(v) if v else None for k, v in parts.items()},  # type: ignore[arg-type]
                   gradients=FactoredGradients.cat(rows) if rows else None)  # type: ignore[arg-type]
