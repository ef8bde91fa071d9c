"""Learning-rate schedules: the three ``fit`` offers, and the Transformer paper's, as numbers to plot.

``fit(schedule="one-cycle")`` warms up from lr / 25 to ``lr`` over the first 30 % of the steps and
anneals to almost 0 (``OneCycleLR``'s cosine shape); ``"warmup-linear"`` is BERT's, a linear warm-up
over the first 6 % of the steps and a linear decay to 0; ``"constant"`` keeps ``lr``. The paper
"Attention Is All You Need" (section 5.3) used lrate = d_model^-0.5 * min(step^-0.5, step *
warmup^-1.5): a linear warm-up over ``warmup`` steps, then a decay with the inverse square root of
the step. Both warm up, because Adam's first steps, taken with poor estimates of the gradients'
scale, can throw a Transformer's post-norm layers far off; they differ in what follows.
"""

from __future__ import annotations

import math

import torch

SCHEDULES = ("one-cycle", "warmup-linear", "constant")
WARMUP = 0.06  # "warmup-linear": the share of the steps that warm up (BERT: 10,000 of its 1,000,000)


def scheduler(schedule: str, opt: torch.optim.Optimizer, total_steps: int):
    """The scheduler ``fit`` steps once per optimiser step."""
    if schedule == "one-cycle":  # warm-up to each group's rate, then annealing to almost 0
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[g["lr"] for g in opt.param_groups],
                                                   total_steps=total_steps)
    if schedule == "warmup-linear":  # BERT's: linear warm-up, then linear decay to 0 at the last step
        warm = max(1, round(WARMUP * total_steps))
        return torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: min((step + 1) / warm, max(0.0, (total_steps - step) / max(1, total_steps - warm))))
    if schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    raise ValueError(f"schedule must be one of {', '.join(map(repr, SCHEDULES))}; got {schedule!r}")


def learning_rates(schedule: str, lr: float, total_steps: int) -> list[float]:
    """The rate of every step of ``fit``'s ``schedule`` with peak ``lr``: the same scheduler, on a
    stand-in optimiser, so that a plot shows exactly what training used."""
    if not (isinstance(total_steps, int) and total_steps >= 1):
        raise ValueError(f"total_steps must be a whole number of at least 1, got {total_steps!r}")
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    sched = scheduler(schedule, opt, total_steps)
    rates = []
    for _ in range(total_steps):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return rates


def transformer_rate(step: int, d_model: int = 512, warmup: int = 4000) -> float:
    """The paper's rate at ``step`` (counted from 1): d_model^-0.5 * min(step^-0.5, step * warmup^-1.5)."""
    if step < 1:
        raise ValueError(f"the paper counts steps from 1, got {step}")
    return d_model ** -0.5 * min(step ** -0.5, step * warmup ** -1.5)


def peak_transformer_rate(d_model: int = 512, warmup: int = 4000) -> float:
    """The paper's largest rate, reached at step ``warmup``: (d_model * warmup)^-0.5."""
    return 1 / math.sqrt(d_model * warmup)
