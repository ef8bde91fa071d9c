"""Pieces more than one model family uses."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def check_choice(option: str, value, choices: tuple) -> None:
    """Refuse a value outside an option's choices, naming them: "shortcut must be 'A' or 'B', got 'C'"."""
    if value not in choices:
        raise ValueError(f"{option} must be {' or '.join(map(repr, choices))}, got {value!r}")


def check_input(x: Tensor, model: str, in_channels: int, size: int | None = None,
                min_size: int | None = None, dtype: torch.dtype | None = None) -> None:
    """Raise a ``ValueError`` that names the expected shape when ``x`` cannot go through ``model``.

    ``size``: the exact height and width the model needs; ``min_size``: the smallest it accepts;
    ``dtype``: the model's (its parameters'), which the input must have.
    """
    if dtype is not None and x.dtype != dtype:
        if not x.is_floating_point():  # uint8 pixels, as data sets store them
            how = f"x.to({str(dtype).removeprefix('torch.')}) / 255" if dtype != torch.float32 else "x.float() / 255"
        else:
            how = "x.float()" if dtype == torch.float32 else f"x.to({dtype})"
        raise ValueError(f"{model} expects {str(dtype).removeprefix('torch.')} input (as its weights are); got "
                         f"{str(x.dtype).removeprefix('torch.')}: convert with {how}")
    ok = x.dim() == 4 and x.shape[1] == in_channels
    if ok and size is not None:
        ok = tuple(x.shape[-2:]) == (size, size)
    if ok and min_size is not None:
        ok = min(x.shape[-2:]) >= min_size
    if ok:
        return
    if size is not None:
        want = f"(N, {in_channels}, {size}, {size})"
    else:
        want = f"(N, {in_channels}, {min_size}, {min_size}) or larger"
    got = "(N, " + ", ".join(str(d) for d in x.shape[1:]) + ")" if x.dim() == 4 else str(tuple(x.shape))
    hint = " (a batch of images: add one with x.unsqueeze(0))" if x.dim() == 3 else ""
    raise ValueError(f"{model} expects input of shape {want}; got {got}{hint}")


def param_dtype(module: nn.Module) -> torch.dtype | None:
    """The dtype of ``module``'s first parameter (what its input must have), or None."""
    p = next(module.parameters(), None)
    return None if p is None else p.dtype


def init_kaiming(model: nn.Module) -> None:
    """torchvision's initialisation of ReLU networks with batch norm (ResNet, MobileNet): He-normal
    convolutions scaled by fan-out, batch norm starting as the identity, zero conv biases."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def make_divisible(v: float, divisor: int = 8) -> int:
    """The nearest multiple of ``divisor`` to ``v`` that is at least 90 % of ``v`` (the TensorFlow
    MobileNet rule that torchvision uses for scaled widths: 32 x 1.1 -> 32, 16 x 1.4 -> 24)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class ConvBNAct(nn.Sequential):
    """Convolution (no bias) -> batch norm -> activation, "same" padding; keys ``0``, ``1`` as in
    torchvision's ``Conv2dNormActivation``. ``groups=in_channels`` makes it depthwise."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, groups: int = 1,
                 activation: type[nn.Module] | None = nn.ReLU, bn_eps: float = 1e-5, bn_momentum: float = 0.1) -> None:
        padding = (kernel_size - 1) // 2  # "same" for odd kernels at stride 1
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False),
            nn.BatchNorm2d(out_channels, eps=bn_eps, momentum=bn_momentum),
        ]
        if activation is not None:
            layers.append(activation(inplace=True))
        super().__init__(*layers)
        self.out_channels = out_channels


class SqueezeExcitation(nn.Module):
    """Squeeze-and-excitation (Hu et al., 2018): average each channel over the grid ("squeeze"),
    two 1x1 convolutions through ``squeeze_channels`` ("excite"), and scale each channel by the
    resulting weight in (0, 1). (N, C, H, W) -> (N, C, H, W)."""

    def __init__(self, channels: int, squeeze_channels: int, activation: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, channels, 1)
        self.activation = activation(inplace=True)
        self.scale_activation = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))  # (N, C, 1, 1)
        return x * scale
