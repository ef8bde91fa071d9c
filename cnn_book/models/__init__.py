"""The book's models, by name: ``get_model("lenet5", num_classes=10)``, ``list_models()``.

Every builder takes ``num_classes`` and ``in_channels``; every model has ``features`` (the
convolutional part) and a head (``classifier``), and an ``input_shape`` (C, H, W) it expects.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

from torch import nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: make a builder available to ``get_model`` under its function name."""
    _MODELS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    """The names ``get_model`` accepts, sorted."""
    return sorted(_MODELS)


def get_model(name: str, **kwargs) -> nn.Module:
    """Build the model registered as ``name``; keyword arguments go to its builder."""
    if name not in _MODELS:
        close = difflib.get_close_matches(name, _MODELS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"Unknown model {name!r}.{hint} Available: {', '.join(list_models())}.")
    return _MODELS[name](**kwargs)


# Importing the family files registers their builders.
from .lenet import LeNet5, lenet5  # noqa: E402
from .simple_cnn import SimpleCNN, simple_cnn  # noqa: E402

__all__ = ["get_model", "list_models", "register_model", "LeNet5", "lenet5", "SimpleCNN", "simple_cnn"]
