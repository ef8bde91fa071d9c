"""Checkers for the chapters' exercises: the reader answers, the package computes, the checker compares.

- ``check_output_size(layer, input_shape, answer)`` and ``check_param_count(module, answer)`` run the
  real layer;
- ``check_number(label, answer)`` compares a number (a receptive field, a cost ratio, a share of the
  parameters) with what the package computes for that exercise, within a tolerance;
- ``check_function(label, fn)`` runs a function the reader wrote on hidden cases against the
  package's own.

Every checker prints its verdict and returns it (True or False). After a wrong answer it prints a
hint, never the answer; call it again with ``reveal=True`` to see the answer.
"""

from __future__ import annotations

import torch
from torch import nn

from ..inspect import count_parameters
from ._report import _report, conv_output_size
from .functions import FUNCTIONS, Function, check_function
from .numeric import NUMBERS, Number, check_number


@torch.no_grad()
def check_output_size(layer: nn.Module, input_shape: tuple[int, ...], answer: tuple[int, ...], *,
                      reveal: bool = False) -> bool:
    """Run ``layer`` on a zero input of ``input_shape`` (C, H, W) and compare its output shape with
    ``answer`` (C, H, W)."""
    real = tuple(layer(torch.zeros(1, *input_shape)).shape[1:])
    name = repr(layer) if "\n" not in repr(layer) else type(layer).__name__
    return _report(tuple(answer) == real, f"the output shape of {name} on {tuple(input_shape)}", tuple(answer),
                   real, "Hint: each side is floor((n + 2p - d(k - 1) - 1) / s) + 1.", reveal)


def check_param_count(module: nn.Module, answer: int, *, reveal: bool = False) -> bool:
    """Compare ``answer`` with the number of parameters of ``module``."""
    real = count_parameters(module)
    hint = "Hint: a convolution has out * (in/groups * k * k + 1); a linear layer out * (in + 1)"
    if not any(isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None for m in module.modules()):
        hint += " (without the + 1 where a layer has no bias)"
    if any(isinstance(m, nn.BatchNorm2d) for m in module.modules()):
        hint += "; a batch norm has 2 per channel"
    return _report(answer == real, f"the parameter count of {type(module).__name__}", answer, f"{real:,}",
                   hint + ".", reveal)


__all__ = ["conv_output_size", "check_output_size", "check_param_count", "check_number", "check_function",
           "NUMBERS", "FUNCTIONS", "Number", "Function"]
