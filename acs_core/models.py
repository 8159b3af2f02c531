"""Classifiers on [0,1] inputs: normalisation inside, `features(x)` = penultimate activations, `head` = last linear layer."""
from __future__ import annotations

from typing import Callable, Protocol

import torch
import torch.nn as nn
import torch.nn.functional as F

from .registry import Registry


class PassCounter(Protocol):
    """What counts a model's sample-passes (timing.PhaseTimer): told of each batch of features as it is computed."""

    def record(self, output: torch.Tensor) -> None: ...


class Classifier(nn.Module):
    """Base class: forward(x) = head(features(x)); subclasses define `body` mapping normalised x to features."""

    pass_counter: PassCounter | None = None  # set by PhaseTimer.watch: every pass through the body is counted

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
        h = self.body((x - self.mean) / self.std)
        if self.pass_counter is not None:
            self.pass_counter.record(h)
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def uncounted(self, x: torch.Tensor) -> torch.Tensor:
        """forward without telling the pass counter: what compile.CompiledModel compiles (the counter's Python side
        effects would split the graph) and counts around."""
        return self.head(self.body((x - self.mean) / self.std))

    def map_layers(self) -> list[nn.Module]:
        """The modules whose outputs are the intermediate feature maps of `feature_maps`, shallow to deep."""
        raise NotImplementedError

    def logits_and_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits and the intermediate feature maps (N, C, H, W) of one forward pass (forward hooks on `map_layers`),
        so a perceptual attack gets its loss and its self perceptual distance without a second pass."""
        maps: list[torch.Tensor] = []
        handles = [m.register_forward_hook(lambda _m, _i, out: maps.append(out)) for m in self.map_layers()]
        try:
            logits = self(x)
        finally:
            for handle in handles:
                handle.remove()
        return logits, maps

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The intermediate feature maps of inputs in [0,1] that the self perceptual distance compares."""
        return self.logits_and_maps(x)[1]


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

    def map_layers(self) -> list[nn.Module]:
        """The four conv blocks' ReLU outputs."""
        return [m for prev, m in zip(self.net, self.net[1:]) if isinstance(prev, nn.BatchNorm2d)]


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

    def map_layers(self) -> list[nn.Module]:
        """The output of every stage (the last through the final BN-ReLU of pre-activation nets), as PAT's ResNets."""
        blocks = list(self.stages)
        ends = [block for block, after in zip(blocks, blocks[1:]) if after.conv1.stride[0] == 2]
        return [*ends, self.final]


@MODELS.register("preact_resnet18", "PreActResNet-18 (fast adversarial training's model), 512-d features")
def preact_resnet18(in_channels: int, num_classes: int, mean: tuple[float, ...], std: tuple[float, ...]) -> Classifier:
    return _ResNetFamily(in_channels, num_classes, mean, std, PreActBlock, [64, 128, 256, 512], 2, 64, preact=True)


@MODELS.register("resnet18", "ResNet-18 for 32x32 inputs (the ACS paper's model), 512-d features")
def resnet18(in_channels: int, num_classes: int, mean: tuple[float, ...], std: tuple[float, ...]) -> Classifier:
    return _ResNetFamily(in_channels, num_classes, mean, std, BasicBlock, [64, 128, 256, 512], 2, 64, preact=False)


@MODELS.register("wrn28_10", "WideResNet-28-10 (TRADES-style), 640-d features")
def wrn28_10(in_channels: int, num_classes: int, mean: tuple[float, ...], std: tuple[float, ...]) -> Classifier:
    return _ResNetFamily(in_channels, num_classes, mean, std, PreActBlock, [160, 320, 640], 4, 16, preact=True)


class Bottleneck(nn.Module):
    """ResNet-50's bottleneck block: 1x1 reduce, 3x3 with the stride, 1x1 expand to 4x width (torchvision's layout)."""

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        cout = 4 * width
        self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout)
        self.shortcut = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                         if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        return F.relu(self.bn3(self.conv3(out)) + self.shortcut(x))


class ResNet50(Classifier):
    """ResNet-50 (bottleneck stages [3, 4, 6, 3], widths 64-512, 2048-d features) with a 3x3 stem for 32x32 inputs
    or torchvision's 7x7 stride-2 stem and max-pool for ImageNet-size inputs."""

    def __init__(self, in_channels: int, num_classes: int, mean: tuple[float, ...], std: tuple[float, ...],
                 imagenet_stem: bool) -> None:
        super().__init__(in_channels, num_classes, mean, std, feature_dim=2048)
        if imagenet_stem:
            self.stem = nn.Sequential(nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                                      nn.MaxPool2d(3, 2, 1))
        else:
            self.stem = nn.Sequential(nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
        stages, cin = [], 64
        for i, (width, depth) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3))):
            blocks = []
            for j in range(depth):
                blocks.append(Bottleneck(cin, width, 2 if (i > 0 and j == 0) else 1))
                cin = 4 * width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)

    def body(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(self.stages(self.stem(x)), 1).flatten(1)

    def map_layers(self) -> list[nn.Module]:
        """The four stages' outputs (layer1-layer4, the layers of the PAT paper's self-bounded ResNet-50)."""
        return list(self.stages)


@MODELS.register("resnet50", "ResNet-50 with a 3x3 stem for 32x32 inputs (the PAT paper's CIFAR model), 2048-d features")
def resnet50(in_channels: int, num_classes: int, mean: tuple[float, ...], std: tuple[float, ...]) -> Classifier:
    return ResNet50(in_channels, num_classes, mean, std, imagenet_stem=False)


@MODELS.register("resnet50_imagenet", "ResNet-50 with the 7x7 stride-2 stem and max-pool for ~224x224 inputs "
                 "(the PAT paper's ImageNet model), 2048-d features")
def resnet50_imagenet(in_channels: int, num_classes: int, mean: tuple[float, ...], std: tuple[float, ...]) -> Classifier:
    return ResNet50(in_channels, num_classes, mean, std, imagenet_stem=True)


def build_model(name: str, in_channels: int, num_classes: int, mean: tuple[float, ...], std: tuple[float, ...]) -> Classifier:
    """Instantiate a registered model; the same arguments (the model spec) rebuild it from a checkpoint."""
    return MODELS.get(name)(in_channels=in_channels, num_classes=num_classes, mean=tuple(mean), std=tuple(std))
