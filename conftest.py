"""How long each notebook takes under nbval (``make test`` runs every chapter in quick mode, and the
book's budget is 45 s a chapter): the cells' times, kernel start included, summed per notebook and
printed at the end of the run, slowest first, with the ones over budget marked."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

BUDGET_SECONDS = 45.0
_seconds: dict[str, float] = defaultdict(float)


def pytest_runtest_logreport(report) -> None:
    path, _, rest = report.nodeid.partition("::")
    if path.endswith(".ipynb") and rest.startswith("Cell"):
        _seconds[path] += report.duration  # setup (the kernel's start, for the first cell), call, teardown


def pytest_terminal_summary(terminalreporter) -> None:
    if not _seconds:
        return
    terminalreporter.section(f"notebook times under nbval (budget {BUDGET_SECONDS:.0f} s)")
    for path, seconds in sorted(_seconds.items(), key=lambda kv: -kv[1]):
        mark = "  OVER BUDGET" if seconds > BUDGET_SECONDS else ""
        terminalreporter.write_line(f"{seconds:7.1f} s  {Path(path).as_posix()}{mark}")
