"""EfficientNet (Tan & Le, 2019, "EfficientNet: rethinking model scaling for convolutional neural
networks", Table 1 and Section 3.3): MBConv blocks (MobileNetV2's inverted residual with
squeeze-and-excitation and SiLU) in seven stages, scaled from B0 to B7 by one coefficient phi:
depth alpha^phi, width beta^phi, resolution gamma^phi, with alpha = 1.2, beta = 1.1, gamma = 1.15.

Attribute names and state_dict keys are torchvision's (``features.1.0.block.1.fc1``,
``classifier.1``), so its published weights load with ``strict=True``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ._api import register_model
from .blocks import ConvBNAct, SqueezeExcitation, check_input, make_divisible, param_dtype

ALPHA, BETA, GAMMA = 1.2, 1.1, 1.15  # the paper's grid search, under alpha * beta^2 * gamma^2 ~ 2


@dataclass
class Stage:
    """One row of Table 1 (B0): MBConv<expand_ratio>, kernel, stride, channels, layers."""

    expand_ratio: int
    kernel: int
    stride: int
    in_channels: int
    out_channels: int
    num_layers: int


B0_STAGES = [
    Stage(1, 3, 1, 32, 16, 1),  # MBConv1, 3x3, 112x112
    Stage(6, 3, 2, 16, 24, 2),  # MBConv6, 3x3, 112 -> 56
    Stage(6, 5, 2, 24, 40, 2),  # MBConv6, 5x5, 56 -> 28
    Stage(6, 3, 2, 40, 80, 3),  # MBConv6, 3x3, 28 -> 14
    Stage(6, 5, 1, 80, 112, 3),  # MBConv6, 5x5, 14
    Stage(6, 5, 2, 112, 192, 4),  # MBConv6, 5x5, 14 -> 7
    Stage(6, 3, 1, 192, 320, 1),  # MBConv6, 3x3, 7
]

# torchvision's coefficients per variant: (width, depth, input resolution, dropout)
VARIANTS: dict[str, tuple[float, float, int, float]] = {
    "b0": (1.0, 1.0, 224, 0.2), "b1": (1.0, 1.1, 240, 0.2), "b2": (1.1, 1.2, 260, 0.3),
    "b3": (1.2, 1.4, 300, 0.3), "b4": (1.4, 1.8, 380, 0.4), "b5": (1.6, 2.2, 456, 0.4),
    "b6": (1.8, 2.6, 528, 0.5), "b7": (2.0, 3.1, 600, 0.5),
}


def compound_scaling(phi: float) -> tuple[float, float, float]:
    """(depth, width, resolution) multipliers for compound coefficient ``phi`` (the paper's Eq. 3)."""
    return ALPHA**phi, BETA**phi, GAMMA**phi


class StochasticDepth(nn.Module):
    """In training, drop the residual branch of each sample with probability ``p`` (and scale the
    kept ones by 1 / (1 - p)); at inference, the identity. Huang et al. (2016)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.empty(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class MBConv(nn.Module):
    """Expand 1x1 (SiLU) -> depthwise k x k (SiLU) -> squeeze-and-excitation -> project 1x1 (linear),
    plus the input (through stochastic depth) when the shapes allow."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, expand_ratio: int,
                 drop_prob: float, bn: dict) -> None:
        super().__init__()
        self.use_res_connect = stride == 1 and in_channels == out_channels
        hidden = make_divisible(in_channels * expand_ratio)
        layers: list[nn.Module] = []
        if hidden != in_channels:
            layers.append(ConvBNAct(in_channels, hidden, 1, activation=nn.SiLU, **bn))
        layers += [
            ConvBNAct(hidden, hidden, kernel, stride, groups=hidden, activation=nn.SiLU, **bn),
            SqueezeExcitation(hidden, max(1, in_channels // 4), activation=nn.SiLU),  # squeeze to in/4
            ConvBNAct(hidden, out_channels, 1, activation=None, **bn),
        ]
        self.block = nn.Sequential(*layers)
        self.stochastic_depth = StochasticDepth(drop_prob)
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> Tensor:
        out = self.block(x)
        return self.stochastic_depth(out) + x if self.use_res_connect else out


class EfficientNet(nn.Module):
    def __init__(self, width_mult: float = 1.0, depth_mult: float = 1.0, num_classes: int = 1000,
                 in_channels: int = 3, dropout: float = 0.2, stochastic_depth_prob: float = 0.2,
                 input_size: int = 224, bn_eps: float = 1e-5, bn_momentum: float = 0.1,
                 name: str = "EfficientNet") -> None:
        super().__init__()
        self.name = name
        self.input_shape = (in_channels, input_size, input_size)
        bn = {"bn_eps": bn_eps, "bn_momentum": bn_momentum}
        width = lambda c: make_divisible(c * width_mult)  # noqa: E731
        stages = [Stage(s.expand_ratio, s.kernel, s.stride, width(s.in_channels), width(s.out_channels),
                        math.ceil(s.num_layers * depth_mult)) for s in B0_STAGES]
        total = sum(s.num_layers for s in stages)
        layers: list[nn.Module] = [ConvBNAct(in_channels, stages[0].in_channels, 3, 2, activation=nn.SiLU, **bn)]
        k = 0
        for s in stages:
            blocks = []
            for i in range(s.num_layers):  # the drop probability grows linearly with depth, to stochastic_depth_prob
                c_in = s.in_channels if i == 0 else s.out_channels
                blocks.append(MBConv(c_in, s.out_channels, s.kernel, s.stride if i == 0 else 1, s.expand_ratio,
                                     stochastic_depth_prob * k / total, bn))
                k += 1
            layers.append(nn.Sequential(*blocks))
        last = 4 * stages[-1].out_channels  # B0: 320 -> 1280
        layers.append(ConvBNAct(stages[-1].out_channels, last, 1, activation=nn.SiLU, **bn))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout, inplace=True), nn.Linear(last, num_classes))
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                r = 1.0 / math.sqrt(m.out_features)
                nn.init.uniform_(m.weight, -r, r)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        check_input(x, self.name, self.input_shape[0], min_size=32, dtype=param_dtype(self))
        return self.classifier(self.avgpool(self.features(x)).flatten(1))


def _efficientnet(variant: str, num_classes: int, in_channels: int, **kwargs) -> EfficientNet:
    w, d, res, dropout = VARIANTS[variant]
    bn = {"bn_eps": 1e-3, "bn_momentum": 0.01} if variant in ("b5", "b6", "b7") else {}  # as torchvision
    kwargs = {"dropout": dropout, "input_size": res, **bn, **kwargs}
    return EfficientNet(w, d, num_classes, in_channels, name=f"EfficientNet-{variant.upper()}", **kwargs)


def _register(variant: str):
    def builder(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> EfficientNet:
        return _efficientnet(variant, num_classes, in_channels, **kwargs)

    w, d, res, _ = VARIANTS[variant]
    builder.__name__ = builder.__qualname__ = f"efficientnet_{variant}"
    builder.__doc__ = (f"EfficientNet-{variant.upper()} (Tan & Le, 2019): widths x{w}, depths x{d}, "
                       f"{res}x{res} input; B0 is Table 1.")
    return register_model(builder)


efficientnet_b0, efficientnet_b1, efficientnet_b2, efficientnet_b3 = map(_register, ("b0", "b1", "b2", "b3"))
efficientnet_b4, efficientnet_b5, efficientnet_b6, efficientnet_b7 = map(_register, ("b4", "b5", "b6", "b7"))
