"""A simple CNN: two 3x3 convolutions with max-pooling, then two fully connected layers.

The shape of the 2-convolution baseline on the Fashion-MNIST benchmark (Xiao et al., 2017).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._api import register_model
from .blocks import check_input, param_dtype


class SimpleCNN(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 1, input_size: int = 28,
                 width: int = 32, hidden: int = 128, dropout: float = 0.25) -> None:
        super().__init__()
        self.input_shape = (in_channels, input_size, input_size)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, kernel_size=3, padding=1),  # (N, C, 28, 28) -> (N, 32, 28, 28)
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # -> (N, 32, 14, 14): halve the grid, keep the strongest response
            nn.Conv2d(width, 2 * width, kernel_size=3, padding=1),  # -> (N, 64, 14, 14)
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # -> (N, 64, 7, 7)
        )
        side = input_size // 4
        self.classifier = nn.Sequential(
            nn.Linear(2 * width * side * side, hidden),  # 64*7*7 = 3,136 inputs: most of the parameters
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        check_input(x, "SimpleCNN", *self.input_shape[:2], dtype=param_dtype(self))
        x = self.features(x)
        return self.classifier(torch.flatten(x, 1))


@register_model
def simple_cnn(num_classes: int = 10, in_channels: int = 1, **kwargs) -> SimpleCNN:
    """A two-convolution CNN for 28x28 images (``input_size`` for others, e.g. 32 for CIFAR-10).

    421,642 parameters for 10 classes on 1x28x28 with the defaults (``width=32``, ``hidden=128``).
    """
    return SimpleCNN(num_classes=num_classes, in_channels=in_channels, **kwargs)
