"""VGG (Simonyan & Zisserman, 2015, "Very deep convolutional networks for large-scale image
recognition", Table 1): stacks of 3x3 convolutions, halved by 2x2 max-pooling, then three fully
connected layers. Attribute names and state_dict keys are torchvision's (``features.N``,
``avgpool``, ``classifier.N``), so its published weights load with ``strict=True``.

``vgg16_cifar`` is the small-image VGG-16 of CIFAR-10 courses: batch norm, no 7x7 pooling, a
512-wide classifier; about 15 M parameters instead of 138 M.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._api import register_model
from .blocks import check_input, param_dtype

# Table 1 of the paper: convolution widths in order, "M" for a 2x2 max-pool. The 1x1 convolutions
# and the LRN of configurations C and A-LRN are not in torchvision and are left out here too.
CONFIGS: dict[str, list[int | str]] = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],  # VGG-11
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],  # VGG-13
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],  # VGG-16
    "E": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
          512, 512, 512, 512, "M"],  # VGG-19
}
DEPTH_TO_CONFIG = {11: "A", 13: "B", 16: "D", 19: "E"}

# The two columns of Table 1 that torchvision does not build: "LRN" is a local response
# normalisation layer, (width, 1) a 1x1 convolution.
PAPER_ONLY_CONFIGS: dict[str, list] = {
    "A-LRN": [64, "LRN", "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "C": [64, 64, "M", 128, 128, "M", 256, 256, (256, 1), "M", 512, 512, (512, 1), "M",
          512, 512, (512, 1), "M"],
}


def config_params(config: list, in_channels: int = 3, num_classes: int = 1000) -> int:
    """Parameters of a Table 1 column with the ImageNet head (7x7x512 -> 4096 -> 4096 -> classes):
    a kxk convolution has out * (in * k * k + 1); LRN and pooling have none."""
    total, c = 0, in_channels
    for v in config:
        if v in ("M", "LRN"):
            continue
        width, k = v if isinstance(v, tuple) else (v, 3)
        total += width * (c * k * k + 1)
        c = width
    return total + (c * 7 * 7 + 1) * 4096 + (4096 + 1) * 4096 + (4096 + 1) * num_classes


def vgg_block(in_channels: int, out_channels: int, num_convs: int, batch_norm: bool = False) -> list[nn.Module]:
    """``num_convs`` 3x3 convolutions (padding 1: the grid is kept) with ReLU, then a 2x2 max-pool
    (the grid is halved). Returned as a list so that blocks flatten into one ``features`` Sequential,
    as torchvision numbers them."""
    layers: list[nn.Module] = []
    for _ in range(num_convs):
        layers.append(nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(nn.ReLU(inplace=True))
        in_channels = out_channels
    layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return layers


def blocks_of(config: list[int | str]) -> list[tuple[int, int]]:
    """Table 1's column as (number of convolutions, width) per block: A -> [(1, 64), (1, 128), (2, 256), ...]."""
    blocks, run = [], []
    for v in config:
        if v == "M":
            assert len(set(run)) == 1, "every block of Table 1 has one width"
            blocks.append((len(run), run[0]))
            run = []
        else:
            run.append(int(v))
    return blocks


def make_features(config: list[int | str], in_channels: int = 3, batch_norm: bool = False,
                  width_mult: float = 1.0) -> tuple[nn.Sequential, int]:
    """The convolutional part of a configuration, one ``vgg_block`` per block; returns it and its width."""
    layers: list[nn.Module] = []
    for num_convs, width in blocks_of(config):
        width = max(1, round(width * width_mult))
        layers += vgg_block(in_channels, width, num_convs, batch_norm)
        in_channels = width
    return nn.Sequential(*layers), in_channels


class VGG(nn.Module):
    def __init__(self, config: list[int | str], num_classes: int = 1000, in_channels: int = 3,
                 batch_norm: bool = False, dropout: float = 0.5, width_mult: float = 1.0,
                 classifier_width: int = 4096, pool_size: int | None = 7, input_size: int = 224,
                 name: str = "VGG") -> None:
        super().__init__()
        self.name = name
        self.input_shape = (in_channels, input_size, input_size)
        self.features, c = make_features(config, in_channels, batch_norm, width_mult)
        self.num_pools = config.count("M")
        # torchvision pools to 7x7 whatever the input; the CIFAR form keeps the 1x1 grid of a 32x32 input
        self.avgpool = nn.AdaptiveAvgPool2d((pool_size, pool_size)) if pool_size else nn.Identity()
        # without the adaptive pool the map after the last pool is input_size / 2**pools on a side
        side = pool_size or input_size // 2**self.num_pools
        if side < 1:
            raise ValueError(f"{name} needs an input of at least {2**self.num_pools}x{2**self.num_pools} "
                             f"({self.num_pools} poolings that halve it); got input_size={input_size}")
        flat = c * side**2
        self.classifier = nn.Sequential(
            nn.Linear(flat, classifier_width),  # VGG-16: 25,088 -> 4,096, 103 M of its 138 M parameters
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(classifier_width, classifier_width),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(classifier_width, num_classes),
        )
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        side = 2**self.num_pools if isinstance(self.avgpool, nn.AdaptiveAvgPool2d) else None
        check_input(x, self.name, self.input_shape[0], size=None if side else self.input_shape[1],
                    min_size=side, dtype=param_dtype(self))
        x = self.features(x)  # (N, 3, 224, 224) -> (N, 512, 7, 7): five pools halve 224 five times
        x = self.avgpool(x)
        return self.classifier(torch.flatten(x, 1))


def _vgg(depth: int, batch_norm: bool, num_classes: int, in_channels: int, **kwargs) -> VGG:
    name = f"VGG-{depth}{' (BN)' if batch_norm else ''}"
    return VGG(CONFIGS[DEPTH_TO_CONFIG[depth]], num_classes, in_channels, batch_norm, name=name, **kwargs)


@register_model
def vgg11(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> VGG:
    """VGG-11, configuration A of Table 1 (Simonyan & Zisserman, 2015)."""
    return _vgg(11, False, num_classes, in_channels, **kwargs)


@register_model
def vgg11_bn(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> VGG:
    """VGG-11 with batch norm after every convolution (torchvision's ``vgg11_bn``)."""
    return _vgg(11, True, num_classes, in_channels, **kwargs)


@register_model
def vgg13(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> VGG:
    """VGG-13, configuration B of Table 1."""
    return _vgg(13, False, num_classes, in_channels, **kwargs)


@register_model
def vgg13_bn(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> VGG:
    """VGG-13 with batch norm (torchvision's ``vgg13_bn``)."""
    return _vgg(13, True, num_classes, in_channels, **kwargs)


@register_model
def vgg16(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> VGG:
    """VGG-16, configuration D of Table 1: 138,357,544 parameters for 1000 classes."""
    return _vgg(16, False, num_classes, in_channels, **kwargs)


@register_model
def vgg16_bn(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> VGG:
    """VGG-16 with batch norm (torchvision's ``vgg16_bn``)."""
    return _vgg(16, True, num_classes, in_channels, **kwargs)


@register_model
def vgg19(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> VGG:
    """VGG-19, configuration E of Table 1."""
    return _vgg(19, False, num_classes, in_channels, **kwargs)


@register_model
def vgg19_bn(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> VGG:
    """VGG-19 with batch norm (torchvision's ``vgg19_bn``)."""
    return _vgg(19, True, num_classes, in_channels, **kwargs)


@register_model
def vgg16_cifar(num_classes: int = 10, in_channels: int = 3, **kwargs) -> VGG:
    """The VGG-16 of small-image courses: configuration D with batch norm on 32x32 inputs, no 7x7
    pooling, a 512-wide classifier. 15,253,578 parameters for 10 classes."""
    kwargs = {"classifier_width": 512, "pool_size": None, "input_size": 32, **kwargs}
    return VGG(CONFIGS["D"], num_classes, in_channels, batch_norm=True, name="VGG-16 (CIFAR)", **kwargs)
