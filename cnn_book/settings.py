"""The book's environment switches, read in one place.

- ``CNN_BOOK_QUICK``: quick mode, training capped to a small subset and a few steps (the tests).
- ``CNN_BOOK_OFFLINE``: published weights only from torch's cache, never downloaded.
- ``CNN_BOOK_PROGRESS``: tqdm progress bars while training (on unless set to a false value).
- ``CNN_BOOK_DIST_TIMEOUT``: seconds a process under torchrun waits for the others (300 by default).

Each takes 1/0, true/false, yes/no or on/off, in any case and with spaces around; unset or empty
means the default. Anything else is an error that names the variable, so that a typo such as
``CNN_BOOK_QUICK=of`` does not silently train for an hour.
"""

from __future__ import annotations

import math
import os

TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")


def env_flag(name: str, default: bool = False) -> bool:
    """The yes/no value of the environment variable ``name`` (``default`` when unset or empty)."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    value = raw.strip().lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise ValueError(f"{name}={raw!r} is not understood: use one of {'/'.join(TRUE)} to turn it on "
                     f"or {'/'.join(FALSE)} to turn it off (any case), or leave it unset")


def quick_mode() -> bool:
    """``CNN_BOOK_QUICK``: train on a small subset for a few steps (off by default)."""
    return env_flag("CNN_BOOK_QUICK")


def offline() -> bool:
    """``CNN_BOOK_OFFLINE``: never download published weights (off by default)."""
    return env_flag("CNN_BOOK_OFFLINE")


def student_edition() -> bool:
    """``CNN_BOOK_STUDENT``: the class's edition, whose exercise checkers never reveal an answer (off
    by default; the student notebooks switch it on)."""
    return env_flag("CNN_BOOK_STUDENT")


def progress_bars() -> bool:
    """``CNN_BOOK_PROGRESS``: show progress bars while training (on by default)."""
    return env_flag("CNN_BOOK_PROGRESS", default=True)


def dist_timeout() -> float:
    """``CNN_BOOK_DIST_TIMEOUT``: seconds to wait for the other processes of a torchrun job (300)."""
    raw = os.environ.get("CNN_BOOK_DIST_TIMEOUT", "").strip() or "300"
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ValueError(f"CNN_BOOK_DIST_TIMEOUT={raw!r} is not a number of seconds: give a positive number, "
                         "or leave it unset for 300")
    return seconds


COLUMN = 80  # characters: the website's page column holds 80 of its monospace font


def fold(line: str, width: int = COLUMN, indent: str = "  ") -> str:
    """``line`` cut into lines of at most ``width`` characters, so that it fits the page column
    without a sideways scroll. It breaks after a " | " or ", " separator where one fits, else at a
    space; the lines after the first start with ``indent``. A line that fits is returned as it is."""
    if "\n" in line:  # each line of a message on its own
        return "\n".join(fold(part, width, indent) for part in line.split("\n"))
    if len(line) <= width:
        return line
    import re
    import textwrap

    pieces = re.split(r"(?<=\|) |(?<=,) ", line)  # keep each separator at the end of its piece
    lines, current = [], ""
    for piece in pieces:
        joined = f"{current} {piece}" if current else piece
        limit = width - (len(indent) if lines else 0)
        if len(joined) <= limit or not current:
            current = joined
        else:
            lines.append(current)
            current = piece
    lines.append(current)
    out, carry = [], ""
    for i, text in enumerate(lines):  # a piece longer than the column: at spaces, its end flowing into the next
        first = indent if out else ""
        wrapped = textwrap.wrap(f"{carry} {text}" if carry else text, width, initial_indent=first,
                                subsequent_indent=indent, break_on_hyphens=False, break_long_words=False) or [first]
        carry = wrapped.pop().strip() if len(wrapped) > 1 and i + 1 < len(lines) else ""
        out += wrapped
    return "\n".join(out)
