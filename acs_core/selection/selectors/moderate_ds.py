"""`moderate_ds`: Moderate-DS (Xia et al.) - the distance of each sample's penultimate features to its class centre,
then keep the band of samples around the median distance (the k samples centred on the median rank). The centre
is the class mean (the paper; `centre=median`: the per-dimension median of the reference code). With
class_balanced=false the band is taken over all classes at once, as the reference code does. view=adversarial:
features at x~."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..algorithms.ranking import median_band
from ..base import SELECTORS, SelectionContext, option
from .families import ModelSelector


def median(points: torch.Tensor) -> torch.Tensor:
    """Per-dimension median of the rows; an even count takes the mean of the two middle values (np.median, as the
    reference code; torch.median would return the lower one)."""
    ordered = points.sort(0).values
    return (ordered[(len(ordered) - 1) // 2] + ordered[len(ordered) // 2]) / 2


@SELECTORS.register("moderate_ds", "Moderate-DS: keep the band around the median distance to the class centre (centre=mean|median)")
@dataclass
class ModerateDS(ModelSelector):
    centre: str = option("mean", ("mean", "median"))

    def prepare(self, ctx: SelectionContext) -> torch.Tensor:
        out = self.outputs(ctx)
        feats, y = out.features.float(), out.labels
        dist = torch.empty(len(y), device=feats.device)
        for c in torch.unique(y):
            rows = y == c
            centre = feats[rows].mean(0) if self.centre == "mean" else median(feats[rows])
            dist[rows] = (feats[rows] - centre).norm(dim=1)
        return dist.cpu()

    def pick(self, data: torch.Tensor, members: torch.Tensor, k: int, ctx: SelectionContext) -> tuple[torch.Tensor, torch.Tensor]:
        return median_band(data[members], k), torch.ones(k)
