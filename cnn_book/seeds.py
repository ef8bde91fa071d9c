"""One training run over several seeds, and what its figure's spread allows a comparison to say.

A single run's accuracy moves with the seed (the initial weights, the shuffle, the augmentation):
on Fashion-MNIST by a point or more. Two settings whose runs differ by less than that have not
been told apart. ``over_seeds`` trains the same set-up once per seed and keeps each run's final
figure; ``compare`` says whether two set-ups are separated (their seeds' ranges do not overlap) or
within noise::

    runs = {alpha: seeds.over_seeds(lambda: build(alpha), data, metric="test_acc", epochs=2)
            for alpha in (1.0, 0.5)}
    print(seeds.table(runs.values()))
    print(seeds.compare(runs[1.0], runs[0.5]))
"""

from __future__ import annotations

import contextlib
import io
import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from .settings import fold
from .train import History, fit


@dataclass
class SeedRuns:
    """The final ``metric`` of one set-up trained once per seed."""

    name: str
    metric: str
    seeds: list[int]
    values: list[float]
    histories: list[History] = field(default_factory=list, repr=False)
    models: list[nn.Module] = field(default_factory=list, repr=False)  # the trained networks, one per seed
    seconds: float = 0.0  # the wall time of all the runs

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float:
        """The sample standard deviation over the seeds (n - 1); NaN for one seed."""
        return statistics.stdev(self.values) if len(self.values) > 1 else math.nan

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)

    def __str__(self) -> str:
        scale, unit = (100, " %") if self.metric.endswith("acc") else (1, "")
        spread = f" ± {scale * self.std:.2f}" if len(self.values) > 1 else ""
        return (f"{self.name}: {self.metric} {scale * self.mean:.2f}{spread}{unit} over {len(self.values)} "
                f"seeds (from {scale * self.low:.2f} to {scale * self.high:.2f})")


def over_seeds(build: Callable[[], nn.Module], data, seeds: Sequence[int] = (0, 1, 2), *, name: str | None = None,
               metric: str = "test_acc", verbose: bool = False, **fit_args) -> SeedRuns:
    """Train ``build()`` on ``data`` once per seed (``torch.manual_seed(seed)`` before the model
    is built, and ``fit(..., seed=seed)`` for the shuffle and the augmentation) and keep the last
    value of ``metric`` from each run's history. ``fit_args`` go to ``fit``; ``verbose`` prints
    every run's lines, else one line per seed."""
    seeds = list(seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be different whole numbers, at least one; got {seeds!r}")
    runs = SeedRuns(name or "", metric, seeds, [])
    for seed in seeds:
        torch.manual_seed(seed)
        model = build()
        runs.name = runs.name or getattr(model, "name", type(model).__name__)
        out = io.StringIO()
        with contextlib.redirect_stdout(out) if not verbose else contextlib.nullcontext():
            hist = fit(model, data, seed=seed, **fit_args)
        if metric not in hist.curves:
            raise ValueError(f"the runs have no {metric!r}; they record {', '.join(hist.curves)}")
        runs.values.append(hist[metric][-1])
        runs.histories.append(hist)
        runs.models.append(model)
        runs.seconds += hist.wall_seconds
        if not verbose:
            print(fold(f"  {runs.name}, seed {seed}: {metric} {hist[metric][-1]:.4f} ({hist.wall_seconds:.0f} s)",
                       indent="    "))
    return runs


def separated(a: SeedRuns, b: SeedRuns) -> bool:
    """Whether every seed of one set-up ends above every seed of the other: the ranges do not overlap."""
    return a.low > b.high or b.low > a.high


def compare(a: SeedRuns, b: SeedRuns) -> str:
    """One line: the difference of the means, and whether the seeds separate the two set-ups."""
    scale, unit = (100, " points") if a.metric.endswith("acc") else (1, "")
    diff = scale * (a.mean - b.mean)
    verdict = "separated: the seeds' ranges apart" if separated(a, b) else "within noise: the ranges overlap"
    return f"{a.name} - {b.name}: {diff:+.2f}{unit} ({verdict})"


def table(runs: Iterable[SeedRuns]) -> str:
    """The runs as a table: mean, standard deviation, lowest and highest over the seeds."""
    runs = list(runs)
    width = max([len(r.name) for r in runs] + [8])
    scale = 100 if runs and runs[0].metric.endswith("acc") else 1
    lines = [f"{'set-up':{width}}  {'mean':>7}  {'std':>6}  {'lowest':>7}  {'highest':>7}  seeds"]
    for r in runs:
        lines.append(f"{r.name:{width}}  {scale * r.mean:7.2f}  {scale * r.std:6.2f}  {scale * r.low:7.2f}  "
                     f"{scale * r.high:7.2f}  {len(r.values)}")
    return "\n".join(lines)
