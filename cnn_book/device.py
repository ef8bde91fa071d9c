"""Where training runs and in what precision: the device (cuda, then mps, then cpu) and the policy
that picks its precision (``precision_for``), apart from the loop so that recipes and the command
line can ask without importing it."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

__all__ = ["default_device", "describe_device", "Precision", "PRECISIONS", "precision_for"]


def default_device() -> torch.device:
    """cuda if there is a GPU, else mps (Apple silicon), else cpu."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def describe_device(device: torch.device) -> str:
    """'cuda (Tesla T4)', 'cpu (2 threads)', ... for the printed summaries."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        n = torch.get_num_threads()
        return f"cpu ({n} thread{'s' if n != 1 else ''})"
    return device.type


@dataclass(frozen=True)
class Precision:
    """How the forward pass computes: ``name`` "fp32", "bf16" or "fp16"; ``dtype`` is autocast's."""

    name: str
    dtype: torch.dtype | None = None

    @property
    def scaled(self) -> bool:
        """fp16's range ends at 65,504, so small gradients underflow: the loss is scaled up and the
        gradients down again (``torch.amp.GradScaler``). bf16 has fp32's range and needs no scaler."""
        return self.name == "fp16"

    def autocast(self, device: torch.device):
        return torch.autocast(device.type, dtype=self.dtype) if self.dtype else contextlib.nullcontext()


PRECISIONS = {"fp32": Precision("fp32"), "bf16": Precision("bf16", torch.bfloat16),
              "fp16": Precision("fp16", torch.float16)}


def precision_for(device: torch.device | str, capability: tuple[int, int] | None = None,
                  prefer: str | None = None) -> Precision:
    """The precision ``fit`` trains in on ``device``.

    - ``prefer`` ("fp32", "bf16" or "fp16") when given: what you ask for, on any device.
    - CUDA with compute capability 8.0 or higher (A100, L4, RTX 30xx, H100): bf16 autocast.
    - CUDA below 8.0 (Colab's T4 is 7.5, a V100 7.0): fp16 autocast with a GradScaler; these GPUs
      have fp16 tensor cores and no bf16 ones.
    - CPU and MPS: fp32.

    ``capability`` stands in for ``torch.cuda.get_device_capability(device)`` (for tests).
    """
    if prefer is not None:
        if prefer not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {prefer!r}")
        return PRECISIONS[prefer]
    device = torch.device(device)
    if device.type != "cuda":
        return PRECISIONS["fp32"]
    capability = capability or torch.cuda.get_device_capability(device)
    return PRECISIONS["bf16" if tuple(capability) >= (8, 0) else "fp16"]
