"""Pieces more than one model family uses."""

from __future__ import annotations

from torch import Tensor, nn


def check_input(x: Tensor, model: str, in_channels: int, size: int | None = None,
                min_size: int | None = None) -> None:
    """Raise a ``ValueError`` that names the expected shape when ``x`` cannot go through ``model``.

    ``size``: the exact height and width the model needs; ``min_size``: the smallest it accepts.
    """
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
