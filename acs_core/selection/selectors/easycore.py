"""`easycore`: EasyCore (Ramesh et al.) - a static coreset of the easiest samples, the lowest AIGN.

AIGN(x) = mean over the proxy's training epochs (and over its initialisations) of ||grad_x CE(f(x), y)||_2, taken
when the sample is presented during ordinary full-data training (proxy.py). view=adversarial: the same norm at the
objective's adversarial points x~ (adversarial AIGN). The paper leaves the input scale open: `input=pixel` (default)
differentiates w.r.t. the [0,1] image the threat model lives in, `input=normalized` w.r.t. the normalised input
(each channel's gradient times its std; the same ranking on one-channel data). `source=run` ranks the norm at the
run's current weights instead (one presentation, re-ranked at every dynamic reselection).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..base import SELECTORS, SelectionContext, option
from .families import ProxySelector


@SELECTORS.register("easycore", "EasyCore: keep the lowest AIGN (mean input-gradient norm over proxy training; source=run: at the current model)")
@dataclass
class EasyCore(ProxySelector):
    input: str = option("pixel", ("pixel", "normalized"))

    keep_largest = False

    def prepare(self, ctx: SelectionContext) -> torch.Tensor:
        sq = self.statistic(ctx, "aign_sq").float()  # (inits, epochs, n, channels)
        if self.input == "normalized":
            std = ctx.model.std.flatten().cpu() if self.source == "run" else torch.tensor(ctx.scores.meta["std"])  # type: ignore[union-attr]
            sq = sq * std ** 2  # d/d((x - m)/s) = s * d/dx
        return sq.sum(-1).sqrt().mean((0, 1))
