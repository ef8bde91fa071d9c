"""U-Net (Ronneberger, Fischer & Brox, 2015, "U-Net: convolutional networks for biomedical image
segmentation", Figure 1): a contracting path of double 3x3 convolutions and 2x2 max-pools, an
expanding path of 2x2 up-convolutions and double 3x3 convolutions, and skip connections that
hand each level's features across. The output is one score per class *per pixel*.

Two forms:

- ``padding="valid"``, the paper's: unpadded convolutions, so every 3x3 convolution trims a pixel
  from each border. A 572x572 input gives a 388x388 map, and each skip is cropped to the size of
  the up-sampled map before the two are concatenated ("crop and copy").
- ``padding="same"``, the common one: padded convolutions and batch norm; the output has the
  input's size and no crop is needed.

Not in torchvision, so the names are the book's: ``encoder[i]`` (level i of the contracting
path), ``bottleneck``, ``decoder[i]`` (``upconv`` then ``conv``), ``head``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._api import register_model
from .blocks import check_input, init_kaiming, param_dtype


class DoubleConv(nn.Sequential):
    """(3x3 convolution [-> batch norm] -> ReLU) twice. Valid padding: (N, C, H, W) -> (N, C', H-4, W-4)."""

    def __init__(self, in_channels: int, out_channels: int, padding: int, batch_norm: bool) -> None:
        layers: list[nn.Module] = []
        for c_in in (in_channels, out_channels):
            layers.append(nn.Conv2d(c_in, out_channels, 3, padding=padding, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class Up(nn.Module):
    """2x2 up-convolution (halves the channels, doubles the grid), crop the skip to that size,
    concatenate [skip, up-sampled], double convolution."""

    def __init__(self, in_channels: int, out_channels: int, padding: int, batch_norm: bool) -> None:
        super().__init__()
        self.upconv = nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2)
        self.conv = DoubleConv(2 * out_channels, out_channels, padding, batch_norm)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = self.upconv(x)
        return self.conv(torch.cat([center_crop(skip, x.shape[-2:]), x], dim=1))  # skip channels first


def center_crop(x: Tensor, size: tuple[int, int]) -> Tensor:
    """The central ``size`` (H, W) of ``x``: what the paper's "copy and crop" arrows keep."""
    top, left = (x.shape[-2] - size[0]) // 2, (x.shape[-1] - size[1]) // 2
    return x[..., top : top + size[0], left : left + size[1]]


class UNet(nn.Module):
    task = "segmentation"  # the output is (N, num_classes, H_out, W_out): one score per class and pixel

    def __init__(self, in_channels: int = 1, num_classes: int = 2, base_width: int = 64, depth: int = 4,
                 padding: str = "valid", batch_norm: bool | None = None) -> None:
        super().__init__()
        if padding not in ("valid", "same"):
            raise ValueError(f"padding must be 'valid' (the paper's) or 'same', got {padding!r}")
        self.padding, self.depth = padding, depth
        batch_norm = padding == "same" if batch_norm is None else batch_norm  # the paper had no batch norm
        pad = 1 if padding == "same" else 0
        widths = [base_width * 2**i for i in range(depth + 1)]  # 64, 128, 256, 512, 1024
        self.name = f"U-Net ({padding}, depth {depth}, base width {base_width})"
        self.encoder = nn.ModuleList(
            DoubleConv(in_channels if i == 0 else widths[i - 1], widths[i], pad, batch_norm) for i in range(depth))
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = DoubleConv(widths[depth - 1], widths[depth], pad, batch_norm)
        # decoder[i] takes level i+1's output up to level i, so decoder[depth-1] runs first
        self.decoder = nn.ModuleList(Up(widths[i + 1], widths[i], pad, batch_norm) for i in range(depth))
        self.head = nn.Conv2d(widths[0], num_classes, 1)  # a score per class for every pixel
        side = self.valid_size_near(572) if padding == "valid" else 64
        self.input_shape = (in_channels, side, side)
        init_kaiming(self)

    # --- which sizes fit --------------------------------------------------------------------
    def output_size(self, size: int) -> int | None:
        """The output side for an input side ``size``, or None when the network cannot take it."""
        if self.padding == "same":
            return size if size % 2**self.depth == 0 and size > 0 else None
        for _ in range(self.depth):  # two 3x3 convolutions trim 4, then the pool halves: must be even
            size -= 4
            if size <= 0 or size % 2:
                return None
            size //= 2
        size -= 4  # the bottleneck
        for _ in range(self.depth):  # the up-convolution doubles, two convolutions trim 4
            size = 2 * size - 4
        return size if size > 0 else None

    def valid_size_near(self, size: int) -> int:
        """The smallest input side at least ``size`` that the network takes."""
        while self.output_size(size) is None:
            size += 1
        return size

    def check_size(self, h: int, w: int) -> None:
        bad = [s for s in (h, w) if self.output_size(s) is None]
        if not bad:
            return
        s = bad[0]
        if self.padding == "same":
            rule = f"a multiple of {2**self.depth} (the grid is halved {self.depth} times)"
        else:
            rule = (f"one whose size stays even before each of the {self.depth} poolings, after the two "
                    f"unpadded 3x3 convolutions that trim 4 pixels at each level")
        below = next((t for t in range(s - 1, 0, -1) if self.output_size(t)), None)
        above = self.valid_size_near(s + 1)
        near = " and ".join(f"{t} (output {self.output_size(t)})" for t in (below, above) if t)
        raise ValueError(f"{self.name} cannot take a {h}x{w} input: each side must be {rule}. "
                         f"Nearest sizes it takes: {near}.")

    # --- the network ------------------------------------------------------------------------
    @property
    def features(self) -> nn.ModuleList:
        """The contracting path (the book's uniform name for a model's convolutional part)."""
        return self.encoder

    @property
    def classifier(self) -> nn.Conv2d:
        """The 1x1 convolution that scores every pixel."""
        return self.head

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.input_shape[0]:
            got = "(N, " + ", ".join(map(str, x.shape[1:])) + ")" if x.dim() == 4 else str(tuple(x.shape))
            hint = " (a batch of images: add one with x.unsqueeze(0))" if x.dim() == 3 else ""
            raise ValueError(f"{self.name} expects input of shape (N, {self.input_shape[0]}, H, W); got {got}{hint}")
        check_input(x, self.name, self.input_shape[0], dtype=param_dtype(self))  # the dtype: uint8, float64
        self.check_size(x.shape[-2], x.shape[-1])
        skips = []
        for level in self.encoder:  # contracting path: keep each level's output for its skip
            x = level(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for up, skip in zip(reversed(self.decoder), reversed(skips), strict=True):  # expanding path
            x = up(x, skip)
        return self.head(x)


@register_model
def unet(num_classes: int = 2, in_channels: int = 1, base_width: int = 64, depth: int = 4, padding: str = "valid",
         **kwargs) -> UNet:
    """U-Net, Figure 1 of Ronneberger et al. (2015) with the defaults (valid padding, 572 -> 388,
    64 to 1024 channels); ``padding="same"`` keeps the input size and adds batch norm."""
    return UNet(in_channels, num_classes, base_width, depth, padding, **kwargs)
