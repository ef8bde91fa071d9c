"""LeNet-5 (LeCun, Bottou, Bengio & Haffner, 1998, "Gradient-based learning applied to document
recognition", Fig. 2 and Table I), in two forms:

- ``variant="modern"`` (default): the form most courses use today. Padding 2 in C1 so that 28x28
  Fashion-MNIST goes in as it is, ReLU, max-pooling, a plain linear output. 61,706 parameters.
- ``variant="1998"``: the paper's network. 32x32 input, the scaled tanh ``1.7159 tanh(2a/3)``,
  trainable subsampling (S2, S4), the partial C3 connection table, C5 as a convolution and an
  output layer of Euclidean RBF units with fixed +-1 codes. 60,000 trainable parameters.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._api import register_model
from .blocks import check_input, param_dtype

# Table I of the paper: which of S2's 6 maps each of C3's 16 maps reads.
# Maps 0-5 read 3 neighbouring maps, 6-11 four neighbours, 12-14 four non-neighbours, 15 all six.
LENET5_C3_TABLE: list[tuple[int, ...]] = [
    (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (4, 5, 0), (5, 0, 1),
    (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (3, 4, 5, 0), (4, 5, 0, 1), (5, 0, 1, 2),
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
]


class ScaledTanh(nn.Module):
    """The paper's squashing function f(a) = A tanh(S a), A = 1.7159, S = 2/3 (so f(+-1) = +-1)."""

    receptive_field = (1, 1)  # pointwise

    def forward(self, x: Tensor) -> Tensor:
        return 1.7159 * torch.tanh(x * (2.0 / 3.0))


class Subsampling(nn.Module):
    """S2/S4: each map's 2x2 blocks are summed, times a trainable coefficient, plus a trainable bias.

    Two parameters per map: (N, C, H, W) -> (N, C, H/2, W/2).
    """

    receptive_field = (2, 2)  # (kernel, stride), read by cnn_book.inspect

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        summed = F.avg_pool2d(x, 2) * 4
        return summed * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class ConnectionTableConv(nn.Module):
    """A convolution in which output map ``j`` sees only the input maps ``table[j]`` (the paper's C3).

    Maps that read the same number of inputs are computed together by one grouped convolution,
    so the parameters are exactly those of the table: sum over j of (len(table[j]) * k * k + 1).
    """

    def __init__(self, table: list[tuple[int, ...]], kernel_size: int = 5) -> None:
        super().__init__()
        self.receptive_field = (kernel_size, 1)
        self.table = [tuple(t) for t in table]
        self.convs = nn.ModuleList()
        order: list[int] = []
        for k in sorted({len(t) for t in self.table}):
            maps = [j for j, t in enumerate(self.table) if len(t) == k]
            inputs = torch.tensor([i for j in maps for i in self.table[j]])
            self.register_buffer(f"inputs_{len(self.convs)}", inputs, persistent=False)
            self.convs.append(nn.Conv2d(len(inputs), len(maps), kernel_size, groups=len(maps)))
            order += maps
        # outputs come grouped by fan-in; this puts them back in the table's order
        self.register_buffer("restore", torch.argsort(torch.tensor(order)), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        parts = [conv(x[:, getattr(self, f"inputs_{g}")]) for g, conv in enumerate(self.convs)]
        return torch.cat(parts, dim=1)[:, self.restore]


class RBFOutput(nn.Module):
    """The paper's output layer: y_i = sum_j (x_j - w_ij)^2 with fixed +-1 codes w_i, one per class.

    Returns ``-y`` so that the largest output is the closest code, as logits are read. The codes
    are a buffer, not parameters: the paper chose them by hand and kept them fixed. Here they are
    drawn at random (the paper names this as an alternative), seeded, so every build has the same.
    """

    def __init__(self, in_features: int = 84, num_classes: int = 10, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        codes = torch.randint(0, 2, (num_classes, in_features), generator=g).float() * 2 - 1
        self.register_buffer("codes", codes)

    def forward(self, x: Tensor) -> Tensor:
        return -torch.cdist(x, self.codes).pow(2)


def _activation(name: str) -> nn.Module:
    acts = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "scaled_tanh": ScaledTanh}
    if name not in acts:
        raise ValueError(f"activation must be one of {sorted(acts)}, got {name!r}")
    return acts[name]()


class LeNet5(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 1,
                 variant: Literal["modern", "1998"] = "modern", activation: str | None = None,
                 pool: Literal["max", "avg"] = "max", input_size: int | None = None) -> None:
        super().__init__()
        if variant not in ("modern", "1998"):
            raise ValueError(f"variant must be 'modern' or '1998', got {variant!r}")
        self.variant = variant
        s = input_size or (28 if variant == "modern" else 32)
        if variant == "1998" and s != 32:  # C5 is a 5x5 convolution of S4's 5x5 maps: 32 in, 1x1 out
            raise ValueError(f"the 1998 LeNet-5 reads 32x32 images (its C5 is a 5x5 convolution of S4's 5x5 "
                             f"maps); got input_size={s}. Pad 28x28 images by 2 (recipe pad=2)")
        if variant == "modern" and (s // 2 - 4) // 2 < 1:
            raise ValueError(f"LeNet-5 needs images of at least 12x12 (two 2x2 pools and a 5x5 convolution "
                             f"leave a map of at least 1x1); got input_size={s}")
        self.input_shape = (in_channels, s, s)
        if variant == "modern":
            act = activation or "relu"
            if pool not in ("max", "avg"):
                raise ValueError(f"pool must be 'max' or 'avg', got {pool!r}")
            Pool = nn.MaxPool2d if pool == "max" else nn.AvgPool2d
            self.features = nn.Sequential(
                nn.Conv2d(in_channels, 6, kernel_size=5, padding=2),  # (N, 1, 28, 28) -> (N, 6, 28, 28)
                _activation(act),
                Pool(2),  # -> (N, 6, 14, 14)
                nn.Conv2d(6, 16, kernel_size=5),  # -> (N, 16, 10, 10): every C3 map reads all 6 maps
                _activation(act),
                Pool(2),  # -> (N, 16, 5, 5)
            )
            side = (s // 2 - 4) // 2
            self.classifier = nn.Sequential(
                nn.Linear(16 * side * side, 120),  # 400 -> 120: the paper's C5, as a linear layer
                _activation(act),
                nn.Linear(120, 84),  # F6
                _activation(act),
                nn.Linear(84, num_classes),  # a linear output in place of the RBF units
            )
        else:
            act = activation or "scaled_tanh"
            self.features = nn.Sequential(OrderedDict([
                ("c1", nn.Conv2d(in_channels, 6, kernel_size=5)),  # (N, 1, 32, 32) -> (N, 6, 28, 28)
                ("act1", _activation(act)),
                ("s2", Subsampling(6)),  # -> (N, 6, 14, 14)
                ("act2", _activation(act)),
                ("c3", ConnectionTableConv(LENET5_C3_TABLE, 5)),  # -> (N, 16, 10, 10)
                ("act3", _activation(act)),
                ("s4", Subsampling(16)),  # -> (N, 16, 5, 5)
                ("act4", _activation(act)),
                ("c5", nn.Conv2d(16, 120, kernel_size=5)),  # -> (N, 120, 1, 1): a convolution in the paper
                ("act5", _activation(act)),
            ]))
            side = ((s - 4) // 2 - 4) // 2 - 4
            self.classifier = nn.Sequential(OrderedDict([
                ("f6", nn.Linear(120 * side * side, 84)),
                ("act6", _activation(act)),
                ("output", RBFOutput(84, num_classes)),
            ]))

    def forward(self, x: Tensor) -> Tensor:
        check_input(x, "LeNet5" if self.variant == "modern" else "LeNet5 (1998)", *self.input_shape[:2],
                    dtype=param_dtype(self))
        x = self.features(x)
        return self.classifier(torch.flatten(x, 1))


@register_model
def lenet5(num_classes: int = 10, in_channels: int = 1, variant: Literal["modern", "1998"] = "modern",
           **kwargs) -> LeNet5:
    """LeNet-5 (LeCun et al., 1998, Fig. 2). ``variant="1998"`` for the paper's network (Table I for C3).

    Options: ``activation`` ("relu", "tanh", "sigmoid", "scaled_tanh"), ``pool`` ("max", "avg";
    modern form only), ``input_size`` (28 for the modern form, 32 for the paper's by default).
    """
    return LeNet5(num_classes=num_classes, in_channels=in_channels, variant=variant, **kwargs)
