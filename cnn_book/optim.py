"""The optimiser ``fit`` builds: its parameter groups (learning rate and weight decay per group) and
the optimiser itself. ``param_groups`` is also ``train.param_groups``, which the chapters print."""

from __future__ import annotations

import torch
from torch import nn


def param_groups(model: nn.Module, lr: float, lr_scale: dict[str, float] | None = None,
                 weight_decay: float = 0.0, decay: str = "all") -> list[dict]:
    """The trainable parameters in groups with their learning rates and weight decay: ``lr`` times
    the scale of the first prefix of ``lr_scale`` that names the parameter's module, ``lr`` for the
    rest. ``decay="all"``: ``weight_decay`` on every parameter; ``"matrices"``: only on the weights
    with two or more dimensions (linear, convolution and embedding weights), never on biases or
    norm scales, nor on what the model names in ``no_weight_decay()`` (timm's hook: a ViT's class
    token and position embeddings). That is nanoGPT's rule, and BERT's; minGPT spares the
    embeddings too."""
    if decay not in ("all", "matrices"):
        raise ValueError(f"decay must be 'all' or 'matrices', got {decay!r}")
    spared = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    scales = dict(lr_scale or {})
    for prefix, scale in scales.items():
        if not scale > 0:
            raise ValueError(f"lr_scale[{prefix!r}] must be positive, got {scale!r} (freeze layers instead)")
    groups: dict[tuple[str, bool], list] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            key = next((k for k in scales if name == k or name.startswith(k + ".")), "")
            decayed = decay == "all" or (p.dim() >= 2 and name not in spared)
            groups.setdefault((key, decayed), []).append(p)
    unused = [k for k in scales if k not in {key for key, _ in groups}]
    if unused:
        raise ValueError(f"lr_scale names {unused[0]!r}, which holds no trainable parameter of "
                         f"{type(model).__name__}; its top-level parts are "
                         f"{', '.join(n for n, _ in model.named_children())}")
    if not groups:
        raise ValueError("every parameter of the model is frozen: there is nothing to train")
    return [{"params": ps, "lr": lr * scales.get(k, 1.0), "weight_decay": weight_decay if decayed else 0.0}
            for (k, decayed), ps in groups.items()]


def make_optimizer(name: str, params, lr: float, weight_decay: float, momentum: float,
                   betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> torch.optim.Optimizer:
    """SGD with Nesterov ``momentum`` (0: plain SGD, d2l's setting), or AdamW with ``betas`` and
    ``eps`` (PyTorch's defaults; chapter 15 pre-trains with RoBERTa's beta2 0.98 and BERT's eps 1e-6)."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=momentum > 0, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=tuple(betas), eps=eps)
    raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {name!r}")
