"""MobileNets: depthwise-separable convolutions for small devices.

- ``mobilenet_v1`` (Howard et al., 2017, "MobileNets: efficient convolutional neural networks
  for mobile vision applications", Table 1): a 3x3 convolution, then 13 depthwise-separable
  layers (a 3x3 depthwise convolution, one filter per channel, then a 1x1 pointwise one that mixes
  channels). The width multiplier ``alpha`` thins every layer, the resolution multiplier ``rho``
  shrinks the input (224 x rho). Not in torchvision; checked against the paper's tables.
- ``mobilenet_v2`` (Sandler et al., 2018, "MobileNetV2: inverted residuals and linear
  bottlenecks", Table 2): inverted residual blocks that expand a narrow tensor t times, filter it
  depthwise, and project it back linearly (no ReLU). Attribute names and state_dict keys are
  torchvision's (``features.1.conv.0.0``, ``classifier.1``), so its weights load strictly.
"""

from __future__ import annotations

from torch import Tensor, nn

from ._api import register_model
from .blocks import ConvBNAct, check_input, init_kaiming, make_divisible, param_dtype

# Table 1 of the v1 paper after the first 3x3 convolution (32 channels, stride 2):
# (pointwise output channels, depthwise stride) of each depthwise-separable layer
V1_LAYERS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
             (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)]

# Table 2 of the v2 paper: t (expansion), c (output channels), n (repeats), s (stride of the first)
V2_SETTING = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]


class DepthwiseSeparable(nn.Sequential):
    """3x3 depthwise (one filter per input channel, ``groups=in_channels``) then 1x1 pointwise, each
    with batch norm and ReLU: C_in * 9 + C_in * C_out weights instead of C_in * C_out * 9."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__(ConvBNAct(in_channels, in_channels, 3, stride, groups=in_channels),
                         ConvBNAct(in_channels, out_channels, 1))


class MobileNetV1(nn.Module):
    def __init__(self, num_classes: int = 1000, in_channels: int = 3, alpha: float = 1.0, rho: float = 1.0,
                 dropout: float = 0.001, small_input: bool = False) -> None:
        super().__init__()
        self.name = f"{alpha}-MobileNet-{round(224 * rho)}" + (" (small input)" if small_input else "")
        self.input_shape = (in_channels, 28, 28) if small_input else (in_channels, round(224 * rho), round(224 * rho))
        width = lambda c: max(8, int(c * alpha))  # noqa: E731  (the paper's alpha * M channels)
        # small_input: a stride-1 first convolution, so a 28x28 image ends on a 2x2 grid, not 1x1
        layers: list[nn.Module] = [ConvBNAct(in_channels, width(32), 3, stride=1 if small_input else 2)]  # 224 -> 112
        c = width(32)
        for out, stride in V1_LAYERS:  # five stride-2 layers in all: 224 -> 7
            layers.append(DepthwiseSeparable(c, width(out), stride))
            c = width(out)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)  # the paper's 7x7 average pool, for any input size
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(c, num_classes))
        self.min_size = 16 if small_input else 32  # the side that the strides bring down to one pixel
        _init(self)

    def forward(self, x: Tensor) -> Tensor:
        check_input(x, self.name, self.input_shape[0], min_size=self.min_size, dtype=param_dtype(self))
        return self.classifier(self.avgpool(self.features(x)).flatten(1))


class InvertedResidual(nn.Module):
    """Expand (1x1, ReLU6) -> depthwise 3x3 (ReLU6) -> project (1x1, linear: no ReLU on the narrow
    output), with the input added back when the shapes allow (stride 1, same channels)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = round(in_channels * expand_ratio)
        self.use_res_connect = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expand_ratio != 1:  # (N, c, H, W) -> (N, t*c, H, W)
            layers.append(ConvBNAct(in_channels, hidden, 1, activation=nn.ReLU6))
        layers += [ConvBNAct(hidden, hidden, 3, stride, groups=hidden, activation=nn.ReLU6),
                   nn.Conv2d(hidden, out_channels, 1, bias=False),  # the linear bottleneck
                   nn.BatchNorm2d(out_channels)]
        self.conv = nn.Sequential(*layers)
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 1000, in_channels: int = 3, width_mult: float = 1.0,
                 dropout: float = 0.2, input_size: int = 224, small_input: bool = False) -> None:
        super().__init__()
        self.name = "MobileNetV2" + (f" x{width_mult:g}" if width_mult != 1 else "") + (
            " (small input)" if small_input else "")
        self.input_shape = (in_channels, 28, 28) if small_input else (in_channels, input_size, input_size)
        c = make_divisible(32 * width_mult)
        last = make_divisible(1280 * max(1.0, width_mult))
        # small_input: stride 1 in the first convolution and in the first 24-channel block (as is usual
        # for 32x32 CIFAR images), so a 28x28 image goes 28 -> 14 -> 7 -> 4 instead of ending at 1x1
        layers: list[nn.Module] = [ConvBNAct(in_channels, c, 3, stride=1 if small_input else 2, activation=nn.ReLU6)]
        for row, (t, out, n, s) in enumerate(V2_SETTING):
            out = make_divisible(out * width_mult)
            s = 1 if small_input and row == 1 else s
            for i in range(n):
                layers.append(InvertedResidual(c, out, s if i == 0 else 1, t))
                c = out
        layers.append(ConvBNAct(c, last, 1, activation=nn.ReLU6))  # (N, 320, 7, 7) -> (N, 1280, 7, 7)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last, num_classes))
        self.min_size = 8 if small_input else 32
        _init(self)

    def forward(self, x: Tensor) -> Tensor:
        check_input(x, self.name, self.input_shape[0], min_size=self.min_size, dtype=param_dtype(self))
        return self.classifier(self.avgpool(self.features(x)).flatten(1))


def _init(model: nn.Module) -> None:
    """torchvision's MobileNetV2 initialisation: He-normal convolutions, N(0, 0.01) linear weights."""
    init_kaiming(model)
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


@register_model
def mobilenet_v1(num_classes: int = 1000, in_channels: int = 3, alpha: float = 1.0, rho: float = 1.0,
                 **kwargs) -> MobileNetV1:
    """MobileNet v1, Table 1 of Howard et al. (2017); ``alpha`` thins the widths, ``rho`` the input
    (Tables 6 and 7). 1.0-MobileNet-224: about 4.2 M parameters and 569 M mult-adds."""
    return MobileNetV1(num_classes, in_channels, alpha, rho, **kwargs)


@register_model
def mobilenet_v2(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> MobileNetV2:
    """MobileNetV2, Table 2 of Sandler et al. (2018): 3,504,872 parameters for 1000 classes."""
    return MobileNetV2(num_classes, in_channels, **kwargs)
