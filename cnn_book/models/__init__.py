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


class WeightsUnavailable(RuntimeError):
    """Published weights could not be had (no internet, say); the message says why and what to do."""


def get_model(name: str, weights: str | None = None, **kwargs) -> nn.Module:
    """Build the model registered as ``name``; keyword arguments go to its builder.

    ``weights``: the name of torchvision's published weights for the model of the same name
    ("IMAGENET1K_V1", or "DEFAULT"), loaded with ``strict=True``. They are downloaded the first
    time (torch's cache keeps them) and need 1000 classes and 3 input channels. With
    ``CNN_BOOK_OFFLINE=1`` only the cache is read (what the book's tests use).
    """
    if name not in _MODELS:
        close = difflib.get_close_matches(name, _MODELS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"Unknown model {name!r}.{hint} Available: {', '.join(list_models())}.")
    model = _MODELS[name](**kwargs)
    if weights is not None:
        load_torchvision_weights(model, name, weights)
    return model


def load_torchvision_weights(model: nn.Module, name: str, weights: str = "DEFAULT") -> nn.Module:
    """Load torchvision's published ``weights`` for its model ``name`` into ``model`` (strictly).

    Sets ``model.categories`` (the class names) and ``model.preprocess`` (torchvision's transform).
    """
    import os
    from urllib.error import URLError

    import torch
    from torchvision.models import get_model_weights

    from ..settings import offline

    try:
        enum = get_model_weights(name)
    except (ValueError, KeyError):
        raise ValueError(f"torchvision publishes no weights for a model named {name!r}") from None
    try:
        w = enum[weights]
    except KeyError:
        raise ValueError(f"{name} has no weights {weights!r}; choose from {[m.name for m in enum]}") from None
    cached = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(w.url))
    if offline() and not os.path.exists(cached):
        raise WeightsUnavailable(f"CNN_BOOK_OFFLINE is set and torchvision's {name} weights {w.name} are not in "
                                 f"torch's cache ({cached}); unset it to download them once.")
    try:
        state = w.get_state_dict(progress=False, check_hash=True)
    except (URLError, OSError, RuntimeError) as e:
        raise WeightsUnavailable(
            f"Could not get torchvision's {name} weights {w.name} ({type(e).__name__}: {e}). They are "
            f"downloaded once from the internet and then read from torch's cache, {torch.hub.get_dir()}."
        ) from None
    adapt = getattr(model, "adapt_torchvision_weights", None)
    if adapt is not None:  # a model whose options differ from torchvision's builder says how (GoogLeNet)
        state = adapt(state)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"torchvision's {name} weights {w.name} are for 1000 classes and 3 input channels; "
                         f"build the model with the defaults to load them ({str(e).splitlines()[0]})") from None
    model.categories = list(w.meta["categories"])
    model.preprocess = w.transforms()
    return model


def classify(model: nn.Module, image, top: int = 5) -> list[tuple[float, str]]:
    """The ``top`` (probability, class name) of a PIL ``image`` for a model built with ``weights=``."""
    import torch

    if not hasattr(model, "preprocess"):
        raise ValueError("classify needs a model built with weights=..., which knows its classes and preprocessing")
    model.eval()
    with torch.no_grad():
        probs = model(model.preprocess(image).unsqueeze(0)).softmax(1)[0]
    values, indices = probs.topk(top)
    return [(p, model.categories[i]) for p, i in zip(values.tolist(), indices.tolist(), strict=True)]


# Importing the family files registers their builders.
from .alexnet import AlexNet, alexnet  # noqa: E402
from .efficientnet import (  # noqa: E402
    EfficientNet,
    efficientnet_b0,
    efficientnet_b1,
    efficientnet_b2,
    efficientnet_b3,
    efficientnet_b4,
    efficientnet_b5,
    efficientnet_b6,
    efficientnet_b7,
)
from .googlenet import GoogLeNet, googlenet  # noqa: E402
from .lenet import LeNet5, lenet5  # noqa: E402
from .mobilenet import MobileNetV1, MobileNetV2, mobilenet_v1, mobilenet_v2  # noqa: E402
from .resnet import ResNet, resnet18, resnet34, resnet50, resnet101, resnet152  # noqa: E402
from .simple_cnn import SimpleCNN, simple_cnn  # noqa: E402
from .unet import UNet, unet  # noqa: E402
from .vgg import VGG, vgg11, vgg11_bn, vgg13, vgg13_bn, vgg16, vgg16_bn, vgg16_cifar, vgg19, vgg19_bn  # noqa: E402

__all__ = [
    "get_model", "list_models", "register_model", "load_torchvision_weights", "WeightsUnavailable", "classify",
    "EfficientNet", "efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3", "efficientnet_b4",
    "efficientnet_b5", "efficientnet_b6", "efficientnet_b7",
    "MobileNetV1", "MobileNetV2", "mobilenet_v1", "mobilenet_v2",
    "AlexNet", "alexnet", "GoogLeNet", "googlenet", "LeNet5", "lenet5", "SimpleCNN", "simple_cnn",
    "ResNet", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    "UNet", "unet",
    "VGG", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg16_cifar", "vgg19", "vgg19_bn",
]
