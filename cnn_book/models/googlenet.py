"""GoogLeNet (Szegedy et al., 2015, "Going deeper with convolutions", Table 1 and Figure 3):
nine inception modules, each running 1x1, 3x3 and 5x5 convolutions and a 3x3 max-pool side by
side on the same input and concatenating their outputs along the channels; 1x1 convolutions
reduce the channels before the expensive 3x3 and 5x5 ones. Two auxiliary classifiers on
inception (4a) and (4d) add their loss (weight 0.3) in training and are not used at inference.

Attribute names and state_dict keys are torchvision's (``conv1.conv``, ``inception3a.branch2.1.conv``,
``aux1.fc2``, ``fc``), so its published weights load with ``strict=True``. Like torchvision's, the
convolutions have batch norm, which the paper (earlier than batch norm) did not. Options:

- ``variant="paper"``: the third branch has the paper's 5x5 convolution; torchvision's has a
  3x3 there (a known slip, kept for its weights' sake). Without the auxiliary classifiers: 7,005,832
  parameters instead of 6,624,904.
- ``aux_logits=False``: no auxiliary classifiers (6,624,904 parameters instead of 13,004,888).
- ``small_input=True``: a 3x3 stride-1 first convolution and no first max-pool, for 28-32 px images.
- ``width_mult``: every width of Table 1 times this factor (a smaller network for a CPU).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._api import register_model
from .blocks import check_input, param_dtype

# Table 1 of the paper, one row per inception module:
# in_channels, #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj
INCEPTION: dict[str, tuple[int, int, int, int, int, int, int]] = {
    "3a": (192, 64, 96, 128, 16, 32, 32),
    "3b": (256, 128, 128, 192, 32, 96, 64),
    "4a": (480, 192, 96, 208, 16, 48, 64),
    "4b": (512, 160, 112, 224, 24, 64, 64),
    "4c": (512, 128, 128, 256, 24, 64, 64),
    "4d": (512, 112, 144, 288, 32, 64, 64),
    "4e": (528, 256, 160, 320, 32, 128, 128),
    "5a": (832, 256, 160, 320, 32, 128, 128),
    "5b": (832, 384, 192, 384, 48, 128, 128),
}


class GoogLeNetOutputs(NamedTuple):
    """What the model returns in training mode with auxiliary classifiers (torchvision's order)."""

    logits: Tensor
    aux_logits2: Tensor | None
    aux_logits1: Tensor | None


class BasicConv2d(nn.Module):
    """Convolution (no bias: the batch norm has one) -> batch norm -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, **kwargs) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.bn(self.conv(x)))


class Inception(nn.Module):
    """Four branches on the same input, concatenated: (N, C, H, W) -> (N, ch1x1 + ch3x3 + ch5x5 + pool_proj, H, W)."""

    def __init__(self, in_channels: int, ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int, ch5x5: int,
                 pool_proj: int, kernel5: int = 3) -> None:
        super().__init__()
        self.branch1 = BasicConv2d(in_channels, ch1x1, kernel_size=1)
        self.branch2 = nn.Sequential(BasicConv2d(in_channels, ch3x3red, kernel_size=1),  # 1x1 reduces first
                                     BasicConv2d(ch3x3red, ch3x3, kernel_size=3, padding=1))
        self.branch3 = nn.Sequential(BasicConv2d(in_channels, ch5x5red, kernel_size=1),  # paper: 5x5; torchvision: 3x3
                                     BasicConv2d(ch5x5red, ch5x5, kernel_size=kernel5, padding=kernel5 // 2))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True),
                                     BasicConv2d(in_channels, pool_proj, kernel_size=1))  # 1x1 after the pool

    def forward(self, x: Tensor) -> Tensor:  # every branch keeps H x W, so the outputs stack on channels
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class InceptionAux(nn.Module):
    """Auxiliary classifier: 4x4 average pool, 1x1 conv to 128, 1024 units, dropout 0.7, classes."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.7, width: int = 128) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d((4, 4))  # the paper's 5x5 stride-3 pool on a 14x14 grid
        self.conv = BasicConv2d(in_channels, width, kernel_size=1)
        self.fc1 = nn.Linear(width * 16, width * 8)
        self.fc2 = nn.Linear(width * 8, num_classes)
        self.dropout = nn.Dropout(p=dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(self.avgpool(x)).flatten(1)  # (N, 512, 14, 14) -> (N, 128 * 4 * 4)
        return self.fc2(self.dropout(F.relu(self.fc1(x), inplace=True)))


class GoogLeNet(nn.Module):
    def __init__(self, num_classes: int = 1000, in_channels: int = 3, aux_logits: bool = True,
                 variant: Literal["torchvision", "paper"] = "torchvision", small_input: bool = False,
                 width_mult: float = 1.0, dropout: float = 0.2, dropout_aux: float = 0.7,
                 transform_input: bool = False) -> None:
        super().__init__()
        if variant not in ("torchvision", "paper"):
            raise ValueError(f"variant must be 'torchvision' or 'paper', got {variant!r}")
        self.name = "GoogLeNet" + (" (paper)" if variant == "paper" else "")
        self.aux_logits = aux_logits
        self.aux_loss_weight = 0.3  # the paper: "their loss gets added to the total loss with weight 0.3"
        self.transform_input = transform_input  # torchvision's published weights expect it (see forward)
        self.input_shape = (in_channels, 32 if small_input else 224, 32 if small_input else 224)
        self.min_size = 8 if small_input else 32
        w = lambda c: max(1, round(c * width_mult))  # noqa: E731
        pool = lambda k=3: nn.MaxPool2d(k, stride=2, ceil_mode=True)  # noqa: E731

        if small_input:  # (N, C, 28, 28) -> (N, 64, 28, 28)
            self.conv1 = BasicConv2d(in_channels, w(64), kernel_size=3, stride=1, padding=1)
            self.maxpool1: nn.Module = nn.Identity()
        else:  # (N, 3, 224, 224) -> 7x7/2 -> 112x112 -> pool -> (N, 64, 56, 56)
            self.conv1 = BasicConv2d(in_channels, w(64), kernel_size=7, stride=2, padding=3)
            self.maxpool1 = pool()
        self.conv2 = BasicConv2d(w(64), w(64), kernel_size=1)
        self.conv3 = BasicConv2d(w(64), w(192), kernel_size=3, padding=1)
        self.maxpool2 = pool()  # -> (N, 192, 28, 28)
        kernel5 = 5 if variant == "paper" else 3
        for stage in ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b"):
            setattr(self, f"inception{stage}", Inception(*map(w, INCEPTION[stage]), kernel5=kernel5))
            if stage == "3b":
                self.maxpool3 = pool()  # 28x28 -> 14x14
            elif stage == "4e":
                self.maxpool4 = pool(2)  # 14x14 -> 7x7
        if aux_logits:
            self.aux1 = InceptionAux(w(512), num_classes, dropout_aux, w(128))  # on (4a)'s output
            self.aux2 = InceptionAux(w(528), num_classes, dropout_aux, w(128))  # on (4d)'s output
        else:
            self.aux1 = self.aux2 = None
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))  # (N, 1024, 7, 7) -> (N, 1024, 1, 1)
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(w(1024), num_classes)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, mean=0.0, std=0.01, a=-2, b=2)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def adapt_torchvision_weights(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """Called by ``load_torchvision_weights``: the published weights were trained on inputs scaled
        to [-1, 1], so the input transform goes on (as torchvision's builder does), and their
        auxiliary classifiers are dropped when this model was built without them."""
        self.transform_input = True
        return state if self.aux_logits else {k: v for k, v in state.items() if not k.startswith("aux")}

    # ``features`` and ``classifier``: views on torchvision's attributes (the book's uniform
    # interface), built on demand so that they add no second set of state_dict keys.
    @property
    def features(self) -> nn.Sequential:
        return nn.Sequential(self.conv1, self.maxpool1, self.conv2, self.conv3, self.maxpool2,
                             self.inception3a, self.inception3b, self.maxpool3, self.inception4a,
                             self.inception4b, self.inception4c, self.inception4d, self.inception4e,
                             self.maxpool4, self.inception5a, self.inception5b)

    @property
    def classifier(self) -> nn.Sequential:
        return nn.Sequential(self.avgpool, nn.Flatten(1), self.dropout, self.fc)

    def forward(self, x: Tensor) -> Tensor | GoogLeNetOutputs:
        check_input(x, self.name, self.input_shape[0], min_size=self.min_size, dtype=param_dtype(self))
        if self.transform_input:  # from ImageNet's mean/std normalisation to the (x - 0.5) / 0.5 of the weights
            mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
            x = (x * std.view(1, 3, 1, 1).to(x) + mean.view(1, 3, 1, 1).to(x) - 0.5) / 0.5
        x = self.maxpool1(self.conv1(x))
        x = self.maxpool2(self.conv3(self.conv2(x)))  # (N, 192, 28, 28)
        x = self.maxpool3(self.inception3b(self.inception3a(x)))  # (N, 480, 14, 14)
        x = self.inception4a(x)  # (N, 512, 14, 14)
        aux1 = self.aux1(x) if self.aux1 is not None and self.training else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))  # (N, 528, 14, 14)
        aux2 = self.aux2(x) if self.aux2 is not None and self.training else None
        x = self.maxpool4(self.inception4e(x))  # (N, 832, 7, 7)
        x = self.inception5b(self.inception5a(x))  # (N, 1024, 7, 7)
        x = self.fc(self.dropout(self.avgpool(x).flatten(1)))
        if self.training and self.aux_logits:
            return GoogLeNetOutputs(x, aux2, aux1)
        return x


@register_model
def googlenet(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> GoogLeNet:
    """GoogLeNet (Inception v1), Table 1 of Szegedy et al. (2015): 13,004,888 parameters with the
    auxiliary classifiers, 6,624,904 without (what runs at inference)."""
    return GoogLeNet(num_classes, in_channels, **kwargs)
