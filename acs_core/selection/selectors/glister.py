"""`glister`: GLISTER (Killamsetty et al.) - greedy maximisation of the validation log-likelihood after one gradient
step on the chosen set, in its one-step Taylor form on the last layer.

With per-sample last-layer gradients g_i of the candidates (at the view) and theta_S = theta - eta * sum_{j in S} g_j
(the head after one step on the chosen set), the gain of i is g_i . grad L_val(theta_S): the first-order decrease
of the validation loss. After every pick the head moves and the validation gradient is recomputed at theta_S from
the cached validation features (DeepCore never updates it). The validation set is the run's whole held-out split
(never the test split; the same for every class group), at the same view as the candidates; eta defaults to the run's
learning rate at the selection epoch.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...config import ConfigError
from ..algorithms.taylor import glister_greedy
from ..base import SELECTORS, SelectionContext, option
from ..gradients import OnFeatures, head_gradients
from ..rows import FactoredGradients
from ..views import Outputs, outputs_at_view, view_objective
from .families import ModelSelector


@SELECTORS.register("glister", "GLISTER: greedy one-step Taylor gain of the validation log-likelihood on last-layer gradients")
@dataclass
class Glister(ModelSelector):
    eta: float | None = option(None, minimum=0.0)  # step size of the one-step update; default: the run's learning rate

    def prepare(self, ctx: SelectionContext) -> tuple[FactoredGradients, Outputs]:
        if ctx.validation is None or len(ctx.validation) == 0:
            raise ConfigError("val_size: glister needs the validation split; use val_size > 0")
        val = outputs_at_view(ctx.model, ctx.objective, ctx.validation, self.view, ctx.device, ctx.batch_size, ctx.timer, gradients=True)
        grads = self.outputs(ctx, gradients=True).gradients
        assert grads is not None
        return grads, val

    def pick(self, data: tuple[FactoredGradients, Outputs], members: torch.Tensor, k: int,
             ctx: SelectionContext) -> tuple[torch.Tensor, torch.Tensor]:
        grads, val = data
        eta = self.eta if self.eta is not None else ctx.lr
        if not eta > 0:
            raise ConfigError("selector.eta: glister needs a positive step size; set selector.eta or run with lr > 0")
        loss = view_objective(ctx.objective, self.view)

        def val_gradient(head: torch.nn.Linear) -> torch.Tensor:
            return head_gradients(OnFeatures(head), loss, val.clean, val.labels, val.adversarial).sum(0)  # type: ignore[arg-type]

        return glister_greedy(grads[members.to(grads.device)].dense(), k, val_gradient, ctx.model.head, eta), torch.ones(k)
