"""The verdict every checker prints: right, or wrong with a hint (and the answer only when asked)."""

from __future__ import annotations

from ..settings import student_edition

_REVEAL = "To see the answer, call the checker again with reveal=True."
_STUDENT = "The student edition does not reveal answers: ask your teacher."


def conv_output_size(n: int, kernel_size: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """floor((n + 2p - d(k - 1) - 1) / s) + 1: the output side of a convolution or pooling layer."""
    return (n + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1


def _reveals(reveal: bool) -> bool:
    """Whether to show the answer: when asked, except in the class's edition (``CNN_BOOK_STUDENT``)."""
    return reveal and not student_edition()


def _after_hint(reveal: bool) -> str:
    """What a wrong answer's message ends with, after the hint."""
    if reveal:  # asked for in the class's edition
        return _STUDENT
    return "" if student_edition() else _REVEAL


def _report(ok: bool, what: str, yours, real, hint: str, reveal: bool) -> bool:
    if ok:
        print(f"Correct: {what} is {real}.")
    elif _reveals(reveal):
        print(f"Not quite: you said {yours}; {what} is {real}. {hint}")
    else:
        print(f"Not quite: {yours} is not {what}. {hint} {_after_hint(reveal)}".rstrip())
    return ok
