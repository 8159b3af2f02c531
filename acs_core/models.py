"""Classifiers on [0,1] inputs: normalisation inside, `features(x)` = penultimate activations, `head` = last linear layer."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .registry import Registry


class Classifier(nn.Module):
    """Base class: forward(x) = head(features(x)); subclasses define `body` mapping normalised x to features."""

    def __init__(self, in_channels: int, num_classes: int, mean: tuple[float, ...], std: tuple[float, ...], feature_dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))
        self.head = nn.Linear(feature_dim, num_classes)
        self.feature_dim = feature_dim

    def body(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features h (N, feature_dim) of inputs in [0,1]; selectors take gradients w.r.t. the head on them."""
        return self.body((x - self.mean) / self.std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


MODELS: Registry[Callable[..., Classifier]] = Registry("model")


@MODELS.register("small_cnn", "4-conv CNN with BatchNorm (~0.4M parameters), the CPU default")
class SmallCNN(Classifier):
    def __init__(self, in_channels: int, num_classes: int, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__(in_channels, num_classes, mean, std, feature_dim=256)

        def block(cin: int, cout: int, stride: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        self.net = nn.Sequential(
            *block(in_channels, 32, 1), *block(32, 64, 2), *block(64, 128, 2), *block(128, 128, 1),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(128 * 4, 256), nn.ReLU(inplace=True),
        )

    def body(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class PreActBlock(nn.Module):
    """Pre-activation basic block (He et al. 2016): PreActResNet-18 and, wider, WideResNet's block (no dropout)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False) if stride != 1 or cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        skip = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        return self.conv2(F.relu(self.bn2(out))) + skip


class BasicBlock(nn.Module):
    """Post-activation basic block of ResNet-18."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.shortcut = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                         if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def _stages(block: type[nn.Module], cin: int, widths: list[int], depth: int) -> nn.Sequential:
    """Stack `depth` blocks per width, the first of each stage after the first with stride 2."""
    layers: list[nn.Module] = []
    for i, w in enumerate(widths):
        for j in range(depth):
            layers.append(block(cin, w, 2 if (i > 0 and j == 0) else 1))
            cin = w
    return nn.Sequential(*layers)


class _ResNetFamily(Classifier):
    """stem -> stages -> (final BN-ReLU for pre-activation nets) -> global average pool -> features."""

    def __init__(self, in_channels: int, num_classes: int, mean: tuple[float, ...], std: tuple[float, ...],
                 block: type[nn.Module], widths: list[int], depth: int, stem: int, preact: bool) -> None:
        super().__init__(in_channels, num_classes, mean, std, feature_dim=widths[-1])
        self.stem = nn.Conv2d(in_channels, stem, 3, 1, 1, bias=False)
        self.stem_bn = nn.Identity() if preact else nn.BatchNorm2d(stem)
        self.stages = _stages(block, stem, widths, depth)
        self.final = nn.Sequential(nn.BatchNorm2d(widths[-1]), nn.ReLU()) if preact else nn.Identity()

    def body(self, x: torch.Tensor) -> torch.Tensor:
        out = self.stem(x)
        if not isinstance(self.stem_bn, nn.Identity):
            out = F.relu(self.stem_bn(out))
        out = self.final(self.stages(out))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)


@MODELS.register("preact_resnet18", "PreActResNet-18 (fast adversarial training's model), 512-d features")
def preact_resnet18(in_channels: int, num_classes: int, mean: tuple[float, ...], std: tuple[float, ...]) -> Classifier:
    return _ResNetFamily(in_channels, num_classes, mean, std, PreActBlock, [64, 128, 256, 512], 2, 64, preact=True)


@MODELS.register("resnet18", "ResNet-18 for 32x32 inputs (the ACS paper's model), 512-d features")
def resnet18(in_channels: int, num_classes: int, mean: tuple[float, ...], std: tuple[float, ...]) -> Classifier:
    return _ResNetFamily(in_channels, num_classes, mean, std, BasicBlock, [64, 128, 256, 512], 2, 64, preact=False)


@MODELS.register("wrn28_10", "WideResNet-28-10 (TRADES-style), 640-d features")
def wrn28_10(in_channels: int, num_classes: int, mean: tuple[float, ...], std: tuple[float, ...]) -> Classifier:
    return _ResNetFamily(in_channels, num_classes, mean, std, PreActBlock, [160, 320, 640], 4, 16, preact=True)


def build_model(name: str, in_channels: int, num_classes: int, mean: tuple[float, ...], std: tuple[float, ...]) -> Classifier:
    """Instantiate a registered model; the same arguments (the model spec) rebuild it from a checkpoint."""
    return MODELS.get(name)(in_channels=in_channels, num_classes=num_classes, mean=tuple(mean), std=tuple(std))
