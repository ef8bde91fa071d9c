"""Checkers for the chapters' exercises: the reader computes a number, the real layer confirms it."""

from __future__ import annotations

import torch
from torch import nn

from .inspect import count_parameters


def conv_output_size(n: int, kernel_size: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """floor((n + 2p - d(k - 1) - 1) / s) + 1: the output side of a convolution or pooling layer."""
    return (n + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1


def _report(ok: bool, what: str, yours, real, hint: str) -> bool:
    if ok:
        print(f"Correct: {what} is {real}.")
    else:
        print(f"Not quite: you said {yours}, but {what} is {real}. {hint}")
    return ok


@torch.no_grad()
def check_output_size(layer: nn.Module, input_shape: tuple[int, ...], answer: tuple[int, ...]) -> bool:
    """Run ``layer`` on a zero input of ``input_shape`` (C, H, W) and compare its output shape with
    ``answer`` (C, H, W). Prints the verdict and returns it."""
    real = tuple(layer(torch.zeros(1, *input_shape)).shape[1:])
    name = repr(layer) if "\n" not in repr(layer) else type(layer).__name__
    return _report(tuple(answer) == real, f"the output shape of {name} on {tuple(input_shape)}", tuple(answer),
                   real, "Hint: each side is floor((n + 2p - d(k - 1) - 1) / s) + 1.")


def check_param_count(module: nn.Module, answer: int) -> bool:
    """Compare ``answer`` with the number of parameters of ``module``. Prints the verdict and returns it."""
    real = count_parameters(module)
    return _report(answer == real, f"the parameter count of {type(module).__name__}", answer, f"{real:,}",
                   "Hint: a convolution has out * (in/groups * k * k + 1); a linear layer out * (in + 1).")
