"""The verdict every checker prints: right, or wrong with a hint (and the answer only when asked)."""

from __future__ import annotations

_REVEAL = "To see the answer, call the checker again with reveal=True."


def conv_output_size(n: int, kernel_size: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """floor((n + 2p - d(k - 1) - 1) / s) + 1: the output side of a convolution or pooling layer."""
    return (n + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1


def _report(ok: bool, what: str, yours, real, hint: str, reveal: bool) -> bool:
    if ok:
        print(f"Correct: {what} is {real}.")
    elif reveal:
        print(f"Not quite: you said {yours}; {what} is {real}. {hint}")
    else:
        print(f"Not quite: {yours} is not {what}. {hint} {_REVEAL}")
    return ok
