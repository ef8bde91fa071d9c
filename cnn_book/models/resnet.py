"""ResNet (He, Zhang, Ren & Sun, 2016, "Deep residual learning for image recognition", Table 1):
blocks that learn a residual F(x) and add it to their input, out = relu(F(x) + shortcut(x)).

Attribute names and state_dict keys are torchvision's (``conv1``, ``bn1``, ``layer1.0.conv1``,
``layer2.0.downsample.0``, ``fc``), so its published weights load with ``strict=True``. Two
options that torchvision does not have:

- ``variant="paper"``: in the bottleneck models (50, 101, 152), the stride-2 of a stage's first
  block sits in its first 1x1 convolution, as in the paper; torchvision ("v1.5") moves it to
  the 3x3 convolution, which sees every input pixel instead of one in four. Same parameters.
- ``small_input=True``: a 3x3 stride-1 first convolution and no max-pool, for 28-32 px images,
  which the ImageNet stem (7x7 stride 2, then a stride-2 pool) would shrink to 7-8 px at once.

``resnet_cifar`` builds the paper's Section 4.2 networks for 32x32 images (6n + 2 layers, widths
16-32-64, parameter-free "option A" shortcuts), and, with ``plain=True``, the same networks without
shortcuts: the "plain" baselines of the paper's Figure 1 and Figure 6.
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from ._api import register_model
from .blocks import check_choice, check_input, init_kaiming, param_dtype


class BasicBlock(nn.Module):
    """Two 3x3 convolutions (ResNet-18/34). The first one carries the stage's stride."""

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1, downsample: nn.Module | None = None,
                 stride_in_1x1: bool = False, plain: bool = False) -> None:
        super().__init__()
        self.plain = plain  # True: the paper's plain baseline, the same layers without the shortcut
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample = downsample  # None: identity shortcut; else 1x1 conv + BN (projection, "option B")
        self.stride = stride

    def residual(self, x: Tensor) -> Tensor:
        return self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))

    def shortcut(self, x: Tensor) -> Tensor:
        return x if self.downsample is None else self.downsample(x)

    def forward(self, x: Tensor) -> Tensor:
        if self.plain:
            return self.relu(self.residual(x))
        return self.relu(self.residual(x) + self.shortcut(x))


class PadShortcut(nn.Module):
    """The paper's option A: identity on every ``stride``-th pixel, the new channels zero; no parameters."""

    def __init__(self, out_channels: int, stride: int) -> None:
        super().__init__()
        self.out_channels, self.stride = out_channels, stride

    def forward(self, x: Tensor) -> Tensor:  # (N, 16, 32, 32) -> (N, 32, 16, 16), channels 16..31 zero
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.out_channels - x.shape[1]))


class Bottleneck(nn.Module):
    """1x1 (reduce to ``channels``) -> 3x3 -> 1x1 (expand to 4 x ``channels``) (ResNet-50/101/152).
    A sibling of ``BasicBlock``, as in torchvision: the same shortcut and sum, another residual."""

    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1, downsample: nn.Module | None = None,
                 stride_in_1x1: bool = False, plain: bool = False) -> None:
        super().__init__()
        self.plain = plain
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)  # paper: the 1x1; torchvision v1.5: the 3x3
        self.conv1 = nn.Conv2d(in_channels, channels, 1, stride=s1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=s3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv3 = nn.Conv2d(channels, channels * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def residual(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))  # (N, 4c, H, W) -> (N, c, H, W): the 1x1 reduces
        out = self.relu(self.bn2(self.conv2(out)))  # the 3x3 works on the narrow tensor
        return self.bn3(self.conv3(out))  # -> (N, 4c, H/s, W/s): the 1x1 expands back

    shortcut = BasicBlock.shortcut
    forward = BasicBlock.forward  # relu(residual + shortcut), or relu(residual) when plain



# Table 1 of the paper: blocks per stage (conv2_x .. conv5_x) for each depth.
LAYERS: dict[int, tuple[type[BasicBlock | Bottleneck], list[int]]] = {
    18: (BasicBlock, [2, 2, 2, 2]),
    34: (BasicBlock, [3, 4, 6, 3]),
    50: (Bottleneck, [3, 4, 6, 3]),
    101: (Bottleneck, [3, 4, 23, 3]),
    152: (Bottleneck, [3, 8, 36, 3]),
}
STAGE_WIDTHS = (64, 128, 256, 512)  # channels of each stage's 3x3 convolutions
CIFAR_WIDTHS = (16, 32, 64)  # Section 4.2: 2n layers each on 32x32, 16x16 and 8x8 grids


class ResNet(nn.Module):
    def __init__(self, block: type[BasicBlock | Bottleneck], layers: list[int], num_classes: int = 1000,
                 in_channels: int = 3, small_input: bool = False,
                 variant: Literal["torchvision", "paper"] = "torchvision", zero_init_residual: bool = False,
                 widths: tuple[int, ...] = STAGE_WIDTHS,
                 shortcut: Literal["A", "B"] = "B", plain: bool = False, name: str = "ResNet") -> None:
        super().__init__()
        if variant not in ("torchvision", "paper"):
            raise ValueError(f"variant must be 'torchvision' or 'paper', got {variant!r}")
        check_choice("shortcut", shortcut, ("A", "B"))
        self.name = name
        self.input_shape = (in_channels, 32, 32) if small_input else (in_channels, 224, 224)
        # the smallest grid that the stride-2 steps (the stages' after the first, the stem's two) leave >= 1
        self.min_size = 2 ** (len(layers) - 1) * (1 if small_input else 4)
        width = widths[0]
        if small_input:  # (N, C, 32, 32) -> (N, 64, 32, 32)
            self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
            self.maxpool: nn.Module = nn.Identity()
        else:  # (N, 3, 224, 224) -> conv 7x7/2 -> 112x112 -> max-pool 3x3/2 -> (N, 64, 56, 56)
            self.conv1 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.in_channels = width
        self.num_stages = len(layers)
        for i, (blocks, w) in enumerate(zip(layers, widths, strict=True)):
            stage = self._make_layer(block, w, blocks, 1 if i == 0 else 2, variant == "paper", shortcut, plain)
            setattr(self, f"layer{i + 1}", stage)  # layer2..4 halve the grid: 56 -> 28 -> 14 -> 7
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(self.in_channels, num_classes)
        init_kaiming(self)
        if zero_init_residual:  # each block starts as the identity (Goyal et al., 2017)
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    nn.init.zeros_((m.bn3 if isinstance(m, Bottleneck) else m.bn2).weight)

    def _make_layer(self, block: type[BasicBlock | Bottleneck], channels: int, blocks: int, stride: int,
                    stride_in_1x1: bool, shortcut: str, plain: bool) -> nn.Sequential:
        downsample: nn.Module | None = None
        if shortcut == "A" and (stride != 1 or self.in_channels != channels * block.expansion):
            downsample = PadShortcut(channels * block.expansion, stride)
        elif stride != 1 or self.in_channels != channels * block.expansion:  # shapes differ: project (B)
            downsample = nn.Sequential(
                nn.Conv2d(self.in_channels, channels * block.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(channels * block.expansion))
        layers = [block(self.in_channels, channels, stride, downsample, stride_in_1x1, plain)]
        self.in_channels = channels * block.expansion
        layers += [block(self.in_channels, channels, plain=plain) for _ in range(1, blocks)]  # identity shortcuts
        return nn.Sequential(*layers)

    # ``features`` and ``classifier`` are views on torchvision's attributes (the book's uniform
    # interface), built on demand so that they add no second set of state_dict keys.
    @property
    def features(self) -> nn.Sequential:
        return nn.Sequential(self.conv1, self.bn1, self.relu, self.maxpool, *self.stages())

    def stages(self) -> list[nn.Sequential]:
        """``layer1``, ``layer2``, ...: the stages (conv2_x, conv3_x, ... in the paper's Table 1)."""
        return [getattr(self, f"layer{i + 1}") for i in range(self.num_stages)]

    @property
    def classifier(self) -> nn.Sequential:
        return nn.Sequential(self.avgpool, nn.Flatten(1), self.fc)

    def forward(self, x: Tensor) -> Tensor:
        check_input(x, self.name, self.input_shape[0], min_size=self.min_size, dtype=param_dtype(self))
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (N, 64, 56, 56) for a 224 input
        for stage in self.stages():
            x = stage(x)  # ResNet-50: (N, 256, 56, 56) -> ... -> (N, 2048, 7, 7)
        return self.fc(self.avgpool(x).flatten(1))


def _resnet(depth: int, num_classes: int, in_channels: int, **kwargs) -> ResNet:
    block, layers = LAYERS[depth]
    return ResNet(block, layers, num_classes, in_channels, name=f"ResNet-{depth}", **kwargs)


@register_model
def resnet18(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> ResNet:
    """ResNet-18, Table 1 of He et al. (2016): basic blocks, [2, 2, 2, 2]; 11,689,512 parameters."""
    return _resnet(18, num_classes, in_channels, **kwargs)


@register_model
def resnet34(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> ResNet:
    """ResNet-34, Table 1: basic blocks, [3, 4, 6, 3]; 21,797,672 parameters."""
    return _resnet(34, num_classes, in_channels, **kwargs)


@register_model
def resnet50(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> ResNet:
    """ResNet-50, Table 1: bottleneck blocks, [3, 4, 6, 3]; 25,557,032 parameters."""
    return _resnet(50, num_classes, in_channels, **kwargs)


@register_model
def resnet101(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> ResNet:
    """ResNet-101, Table 1: bottleneck blocks, [3, 4, 23, 3]; 44,549,160 parameters."""
    return _resnet(101, num_classes, in_channels, **kwargs)


@register_model
def resnet152(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> ResNet:
    """ResNet-152, Table 1: bottleneck blocks, [3, 8, 36, 3]; 60,192,808 parameters."""
    return _resnet(152, num_classes, in_channels, **kwargs)


@register_model
def resnet_cifar(num_classes: int = 10, in_channels: int = 3, depth: int = 20, plain: bool = False,
                 **kwargs) -> ResNet:
    """The CIFAR-10 ResNets of He et al. (2016), Section 4.2: 6n + 2 layers (20, 32, 44, 56, 110),
    n basic blocks on each of 16-32-64 channels, option-A shortcuts; ResNet-20 has 0.27 M parameters
    (Table 6). ``plain=True``: the same network without shortcuts."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"resnet_cifar has 6n + 2 layers (8, 14, 20, 32, 44, 56, 110, ...); got depth={depth}")
    n = (depth - 2) // 6
    kwargs = {"small_input": True, "widths": CIFAR_WIDTHS, "shortcut": "A", **kwargs}
    name = f"{'Plain' if plain else 'ResNet'}-{depth} (CIFAR)"
    return ResNet(BasicBlock, [n, n, n], num_classes, in_channels, plain=plain, name=name, **kwargs)
