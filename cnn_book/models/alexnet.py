"""AlexNet (Krizhevsky, Sutskever & Hinton, 2012, "ImageNet classification with deep convolutional
neural networks", Fig. 2 and Section 3), in two forms:

- ``variant="torchvision"`` (default): torchvision's single-tower network (64-192-384-256-256
  kernels, no local response normalisation), attribute for attribute, so that its published
  weights load with ``strict=True``. 61,100,840 parameters for 1000 classes.
- ``variant="paper"``: the paper's network, 96-256-384-384-256 kernels whose layers 2, 4 and 5
  only see the half of the previous layer that lay on the same GPU (``groups=2``), local response
  normalisation after layers 1 and 2. 60,965,224 parameters for 1000 classes.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from ._api import register_model
from .blocks import check_input, param_dtype

# (out_channels, kernel, stride, padding, groups, lrn_after, pool_after) per convolution, as in the paper.
# Groups=2 is the two-GPU split: conv2, conv4 and conv5 read only the kernel maps on their own GPU.
PAPER_CONVS = [
    (96, 11, 4, 0, 1, True, True),  # no padding: 227x227 -> 55x55 (see the chapter's 224-versus-227 puzzle)
    (256, 5, 1, 2, 2, True, True),
    (384, 3, 1, 1, 1, False, False),
    (384, 3, 1, 1, 2, False, False),
    (256, 3, 1, 1, 2, False, True),
]
TORCHVISION_CONVS = [
    (64, 11, 4, 2, 1, False, True),
    (192, 5, 1, 2, 1, False, True),
    (384, 3, 1, 1, 1, False, False),
    (256, 3, 1, 1, 1, False, False),
    (256, 3, 1, 1, 1, False, True),
]


class AlexNet(nn.Module):
    def __init__(self, num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.5,
                 variant: Literal["torchvision", "paper"] = "torchvision", input_size: int | None = None,
                 width_mult: float = 1.0, classifier_width: int = 4096) -> None:
        super().__init__()
        if variant not in ("torchvision", "paper"):
            raise ValueError(f"variant must be 'torchvision' or 'paper', got {variant!r}")
        if not (width_mult > 0 and classifier_width >= 1):
            raise ValueError(f"width_mult must be positive and classifier_width at least 1, got {width_mult!r} "
                             f"and {classifier_width!r}")
        self.variant = variant
        size = input_size or (227 if variant == "paper" else 224)
        self.input_shape = (in_channels, size, size)
        layers: list[nn.Module] = []
        c_in = in_channels
        for c_out, k, s, p, groups, lrn, pool in PAPER_CONVS if variant == "paper" else TORCHVISION_CONVS:
            # width_mult < 1: fewer kernels in every layer, the same geometry (a CPU's AlexNet at 224)
            c_out = max(groups, round(c_out * width_mult / groups) * groups)
            layers += [nn.Conv2d(c_in, c_out, kernel_size=k, stride=s, padding=p, groups=groups), nn.ReLU(inplace=True)]
            if lrn:  # the paper's k=2, n=5, alpha=1e-4, beta=0.75; PyTorch divides alpha by n, so pass n*alpha
                layers.append(nn.LocalResponseNorm(size=5, alpha=5 * 1e-4, beta=0.75, k=2.0))
            if pool:  # "overlapping pooling": 3x3 windows every 2 pixels
                layers.append(nn.MaxPool2d(kernel_size=3, stride=2))
            c_in = c_out
        self.features = nn.Sequential(*layers)  # (N, 3, 224, 224) or, for the paper's, 227 -> (N, 256, 6, 6)
        # (N, 256, k, k) -> (N, 256, 6, 6): k = 6 at 223-254 px; a smaller map is copied up (k = 1 at 63-94 px:
        # every one of the 36 positions holds the same 256 numbers)
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            nn.Linear(c_in * 6 * 6, classifier_width),  # 9,216 -> 4,096: 37.7 M of the 61 M parameters
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(classifier_width, classifier_width),
            nn.ReLU(inplace=True),
            nn.Linear(classifier_width, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        check_input(x, "AlexNet", self.input_shape[0], min_size=63 if self.variant == "torchvision" else 67,
                    dtype=param_dtype(self))
        x = self.features(x)
        x = self.avgpool(x)
        return self.classifier(torch.flatten(x, 1))


@register_model
def alexnet(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> AlexNet:
    """AlexNet (Krizhevsky et al., 2012, Fig. 2). torchvision's form by default; ``variant="paper"``
    for the two-GPU network with LRN. Options: ``dropout``, ``input_size`` (what ``summary`` uses; 224,
    or 227 for the paper's form), ``width_mult`` (kernels per convolution, 0.25 for a quarter) and
    ``classifier_width`` (fc6 and fc7, 4,096): smaller networks of the same geometry."""
    return AlexNet(num_classes=num_classes, in_channels=in_channels, **kwargs)
